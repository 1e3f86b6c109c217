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
//!
//! # Size limit
//!
//! Without a limit the cache only grows. With one
//! ([`ClientOptions::blob_cache_size`](super::ClientOptions::blob_cache_size)),
//! a [`SizeChecker`] thread does what ZEO's `_check_blob_cache_size` does,
//! so that Rust and Python clients can share one cache:
//!
//! - it runs at start and whenever the bytes downloaded or committed into
//!   the cache since the last check reach `blob_cache_size_check` percent
//!   of the size, on its own thread, never on the caller's;
//! - one process at a time checks: the checker holds `check_size.lock`
//!   (an `flock`, which is what zc.lockfile takes). One that finds it
//!   held waits a second, tries again, and otherwise leaves
//!   `check_size.attempt` behind and gives up; the holder, once under
//!   its target, looks again if it finds that file;
//! - it sums the `.blob` files of the numbered directories and, while
//!   over the target (the size less the check amount, so the cache can
//!   take that much before the next check), removes files in order of
//!   access time, oldest first, skipping those whose oid directory's
//!   `.lock` someone holds (a download, or a reader opening the file).
//!
//! Readers mark a file used by setting its access time (ZEO's
//! `_accessed`); ours do so while holding the directory's `.lock`, and our
//! checker, holding the same lock, looks at the file's access time again
//! before removing it and keeps it if it changed since its scan. So a file
//! handed out by `load_blob` is removed only by a later check that finds it
//! least recently used again; Python's checker does not look again, and
//! may remove a file that was used while it ran.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use zodb_core::{Oid, Tid};

/// The layout marker file and the layout's name.
const LAYOUT_MARKER: &str = ".layout";
const LAYOUT: &str = "zeocache";
/// Suffix of committed blob files (ZODB's `BLOB_SUFFIX`).
const BLOB_SUFFIX: &str = ".blob";
/// The lock of an oid directory (ZEO's `_lock_blob`).
const DIR_LOCK: &str = ".lock";
/// Held by the one process checking the cache's size (ZEO's name).
const CHECK_LOCK: &str = "check_size.lock";
/// Left by a checker that found another at work (ZEO's name).
const CHECK_ATTEMPT: &str = "check_size.attempt";
/// How long a checker waits before its second try at [`CHECK_LOCK`]
/// (ZEO: one second).
const CHECK_LOCK_RETRY: Duration = Duration::from_secs(1);
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

    /// The cache directory (absolute).
    pub(crate) fn base(&self) -> &Path {
        &self.base
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
            .open(dir.join(DIR_LOCK))?;
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
    /// read-only as ZEO leaves it, and marks it used now (it was just
    /// downloaded or committed: the most recently used file, whenever its
    /// bytes were written). The caller holds the oid's lock.
    pub(crate) fn install(&self, from: &Path, oid: Oid, serial: Tid) -> io::Result<PathBuf> {
        let target = self.path(oid, serial);
        let mut perms = fs::metadata(from)?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(from, perms)?;
        move_file(from, &target)?;
        BlobCache::touch(&target);
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

/// A blob file found by a size check's scan.
#[derive(Debug, Clone)]
struct Scanned {
    path: PathBuf,
    size: u64,
    /// `None` where the file system keeps no access times: such files
    /// go first, in name order.
    accessed: Option<SystemTime>,
}

/// The `.blob` files of the numbered (oid) directories of `base`, and
/// their total size: what ZEO's checker counts (not `tmp`, not `.dl`
/// files being downloaded). Files removed while the scan runs are
/// skipped.
fn scan(base: &Path) -> io::Result<(Vec<Scanned>, u64)> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let mut files = Vec::new();
    let mut total = 0u64;
    for dir in fs::read_dir(base)? {
        let dir = dir?;
        let name = dir.file_name();
        let numbered = name
            .to_str()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !numbered {
            continue;
        }
        let entries = match fs::read_dir(dir.path()) {
            Ok(entries) => entries,
            Err(e) if gone(&e) || e.kind() == io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().ends_with(BLOB_SUFFIX) {
                continue;
            }
            let path = entry.path();
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() {
                continue;
            }
            total = total.saturating_add(meta.len());
            files.push(Scanned {
                path,
                size: meta.len(),
                accessed: meta.accessed().ok(),
            });
        }
    }
    Ok((files, total))
}

/// What became of one file a check wanted to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Removed,
    /// Someone else removed it first.
    Gone,
    /// Its directory is locked, or it was used since the scan.
    InUse,
}

/// Removes `file` unless it is in use: its oid directory's lock is held
/// by someone else (ZEO's test), or its access time changed since the
/// scan (ours too: a reader marked it used meanwhile, so it is no longer
/// the least recently used file).
fn remove_unless_used(file: &Scanned) -> io::Result<Removal> {
    let Some(dir) = file.path.parent() else {
        return Ok(Removal::InUse);
    };
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(DIR_LOCK))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(Removal::InUse),
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    let accessed = match fs::metadata(&file.path) {
        Ok(m) => m.accessed().ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(e),
    };
    if accessed != file.accessed {
        return Ok(Removal::InUse);
    }
    // Removing a read-only file needs only the directory's permission on
    // Unix (ZODB's `remove_committed` is `os.remove` there).
    match fs::remove_file(&file.path) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removal::Gone),
        Err(e) => Err(e),
    }
}

/// What one size check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The check ran: the blob files now total `size` bytes (still over
    /// the target only if every other file was in use), after removing
    /// `removed` files.
    Ran { size: u64, removed: usize },
    /// Another process holds `check_size.lock`: it was asked (by
    /// `check_size.attempt`) to look again before it stops.
    Busy,
    /// Stopped before the end (the client is closing).
    Stopped,
}

/// Takes `check_size.lock` as ZEO's checker does: at once, or after
/// [`CHECK_LOCK_RETRY`]; `None` if another process keeps it. Like
/// zc.lockfile, writes this process's id into it, for whoever wonders who
/// holds it.
fn take_check_lock(base: &Path, stop: &AtomicBool) -> io::Result<Option<File>> {
    let path = base.join(CHECK_LOCK);
    for attempt in 0..2 {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match f.try_lock() {
            Ok(()) => {
                f.set_len(0)?;
                f.write_all(format!(" {}\n", std::process::id()).as_bytes())?;
                return Ok(Some(f));
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if attempt == 0 && !sleep_unless_stopped(CHECK_LOCK_RETRY, stop) {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Sleeps for `d` in short steps; false if `stop` was set meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    !stop.load(Ordering::Relaxed)
}

/// Brings the blob cache at `base` down to `target` bytes (ZEO's
/// `_check_blob_cache_size`; see the module documentation): under
/// `check_size.lock`, removes the least recently used files not in use,
/// looking again after each round and whenever another process asked
/// for a check meanwhile. A directory that is not a `zeocache` cache is
/// an error: nothing is removed from, say, a server's blob directory.
pub(crate) fn check_size(base: &Path, target: u64, stop: &AtomicBool) -> io::Result<Checked> {
    let layout = fs::read_to_string(base.join(LAYOUT_MARKER))?;
    if layout.trim() != LAYOUT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: blob directory layout {:?}; only a {LAYOUT:?} cache is pruned",
                base.display(),
                layout.trim()
            ),
        ));
    }
    let Some(_lock) = take_check_lock(base, stop)? else {
        if stop.load(Ordering::Relaxed) {
            return Ok(Checked::Stopped);
        }
        File::create(base.join(CHECK_ATTEMPT))?;
        return Ok(Checked::Busy);
    };
    let mut removed = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Checked::Stopped);
        }
        let (mut files, mut size) = scan(base)?;
        if size <= target {
            if fs::remove_file(base.join(CHECK_ATTEMPT)).is_ok() {
                // Another process wanted a check while this one ran: its
                // downloads may be newer than this scan.
                continue;
            }
            return Ok(Checked::Ran { size, removed });
        }
        files.sort_by(|a, b| {
            a.accessed
                .cmp(&b.accessed)
                .then_with(|| a.path.cmp(&b.path))
        });
        let before = size;
        for file in &files {
            if size <= target {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(Checked::Stopped);
            }
            match remove_unless_used(file) {
                Ok(Removal::Removed) => {
                    size = size.saturating_sub(file.size);
                    removed += 1;
                }
                Ok(Removal::Gone) => size = size.saturating_sub(file.size),
                Ok(Removal::InUse) => {}
                Err(e) => {
                    tracing::warn!(path = %file.path.display(), error = %e, "cannot remove a blob from the cache");
                }
            }
        }
        if size == before {
            // Everything that would have to go is in use: leave it to the
            // next check rather than spin.
            return Ok(Checked::Ran { size, removed });
        }
    }
}

/// Keeps a blob cache near its size (see the module documentation): a
/// thread that runs [`check_size`] when asked, so that callers never wait
/// for a scan of the cache. Stopped (and joined) when dropped.
#[derive(Debug)]
pub(crate) struct SizeChecker {
    shared: Arc<CheckerShared>,
    /// Bytes added to the cache that ask for a check (ZEO's
    /// `_blob_cache_size_check`).
    check_bytes: u64,
    /// Bytes added since the last request.
    added: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct CheckerShared {
    base: PathBuf,
    target: u64,
    requested: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    /// Checks finished, for tests.
    finished: AtomicU64,
}

impl SizeChecker {
    /// Starts the checker of the cache at `base` for a size of `size`
    /// bytes, checked each time `check_percent` percent of it was added
    /// (below 100), and asks for a first check at once (ZEO checks when
    /// the client starts: the cache may have grown while it was away).
    pub(crate) fn start(base: &Path, size: u64, check_percent: u8) -> io::Result<SizeChecker> {
        let check_bytes =
            u64::try_from(u128::from(size) * u128::from(check_percent) / 100).unwrap_or(size);
        let shared = Arc::new(CheckerShared {
            base: base.to_owned(),
            target: size.saturating_sub(check_bytes),
            requested: Mutex::new(true),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            finished: AtomicU64::new(0),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("zeo-blob-cache-size".to_owned())
            .spawn(move || worker.run())?;
        Ok(SizeChecker {
            shared,
            check_bytes,
            added: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The size the checker brings the cache down to.
    #[cfg(test)]
    pub(crate) fn target(&self) -> u64 {
        self.shared.target
    }

    /// Counts `bytes` that entered the cache (a download, a commit); once
    /// they add up to the check amount, asks the thread for a check.
    pub(crate) fn added(&self, bytes: u64) {
        let mut due = false;
        let _ = self
            .added
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                let n = n.saturating_add(bytes);
                due = n >= self.check_bytes;
                Some(if due { 0 } else { n })
            });
        if due {
            *self
                .shared
                .requested
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = true;
            self.shared.wake.notify_one();
        }
    }

    /// Checks finished so far.
    #[cfg(test)]
    pub(crate) fn finished(&self) -> u64 {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// Stops the thread, interrupting a check in progress (the next
    /// start checks again), and waits for it.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _requested = self
                .shared
                .requested
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.wake.notify_all();
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for SizeChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl CheckerShared {
    fn run(&self) {
        loop {
            {
                let mut requested = self
                    .requested
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                while !*requested && !self.stop.load(Ordering::SeqCst) {
                    requested = self
                        .wake
                        .wait(requested)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                *requested = false;
            }
            let base = self.base.display();
            match check_size(&self.base, self.target, &self.stop) {
                Ok(Checked::Ran { size, removed }) if size > self.target => {
                    tracing::debug!(cache = %base, size, target = self.target, removed, "blob cache still over its target: the rest is in use");
                }
                Ok(Checked::Ran { size, removed }) => {
                    tracing::debug!(cache = %base, size, target = self.target, removed, "blob cache checked");
                }
                Ok(Checked::Busy) => {
                    tracing::debug!(cache = %base, "another process is checking the blob cache's size");
                }
                Ok(Checked::Stopped) => return,
                Err(e) => {
                    tracing::warn!(cache = %base, error = %e, "cannot check the blob cache's size");
                }
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
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
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
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

    /// Puts a `len`-byte blob of `oid` in the cache, last used `age`
    /// seconds ago.
    fn put(c: &BlobCache, oid: u64, len: usize, age: u64) -> PathBuf {
        let tmp = c.temp_path();
        fs::write(&tmp, vec![7u8; len]).unwrap();
        let p = {
            let _lock = c.lock(Oid(oid)).unwrap();
            c.install(&tmp, Oid(oid), Tid(1)).unwrap()
        };
        let when = SystemTime::now() - Duration::from_secs(age);
        File::open(&p)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(when))
            .unwrap();
        p
    }

    /// Ten 1000-byte blobs, `files[0]` the least recently used. Oids 1
    /// and 998 share a directory.
    fn ten_blobs(c: &BlobCache) -> Vec<PathBuf> {
        [1, 998, 2, 3, 4, 5, 6, 7, 8, 9]
            .into_iter()
            .enumerate()
            .map(|(i, oid)| put(c, oid, 1000, 1000 - 10 * i as u64))
            .collect()
    }

    fn left(files: &[PathBuf]) -> Vec<usize> {
        (0..files.len()).filter(|&i| files[i].exists()).collect()
    }

    #[test]
    fn a_check_removes_the_least_recently_used_blobs_down_to_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        let files = ten_blobs(&c);
        // Neither uncommitted files nor downloads in progress count, nor
        // are they removed.
        fs::write(c.temp_dir().join("x.tmp"), vec![0u8; 50_000]).unwrap();
        let dl = c.download_path(Oid(5), Tid(2));
        fs::write(&dl, vec![0u8; 50_000]).unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(
            check_size(dir.path(), 4500, &stop).unwrap(),
            Checked::Ran {
                size: 4000,
                removed: 6
            }
        );
        assert_eq!(left(&files), [6, 7, 8, 9]);
        assert!(c.temp_dir().join("x.tmp").exists() && dl.exists());
        assert!(dir.path().join("1/.lock").exists());
        // Under the target: nothing to do.
        assert_eq!(
            check_size(dir.path(), 4000, &stop).unwrap(),
            Checked::Ran {
                size: 4000,
                removed: 0
            }
        );
        // Target 0 empties the cache.
        assert_eq!(
            check_size(dir.path(), 0, &stop).unwrap(),
            Checked::Ran {
                size: 0,
                removed: 4
            }
        );
        assert!(c.temp_dir().join("x.tmp").exists() && dl.exists());
    }

    #[test]
    fn blobs_in_a_locked_directory_or_used_since_the_scan_stay() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        let files = ten_blobs(&c);
        // A download (or a reader opening a file) holds oid 1's directory,
        // which oid 998 shares: the two oldest stay, the next six go.
        let held = c.lock(Oid(1)).unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(
            check_size(dir.path(), 4500, &stop).unwrap(),
            Checked::Ran {
                size: 4000,
                removed: 6
            }
        );
        assert_eq!(left(&files), [0, 1, 8, 9]);
        // All that is left in use: the check stops over its target rather
        // than spinning.
        let held2 = c.lock(Oid(8)).unwrap();
        let held3 = c.lock(Oid(9)).unwrap();
        assert_eq!(
            check_size(dir.path(), 1000, &stop).unwrap(),
            Checked::Ran {
                size: 4000,
                removed: 0
            }
        );
        drop((held, held2, held3));
        // A file used after the scan (its access time set anew, as a
        // reader does under the directory's lock) is not removed.
        let (scanned, total) = scan(dir.path()).unwrap();
        assert_eq!(total, 4000);
        let newest = scanned.iter().find(|f| f.path == files[9]).unwrap();
        let oldest = scanned.iter().find(|f| f.path == files[0]).unwrap();
        BlobCache::touch(&files[9]);
        assert_eq!(remove_unless_used(newest).unwrap(), Removal::InUse);
        assert_eq!(remove_unless_used(oldest).unwrap(), Removal::Removed);
        assert_eq!(remove_unless_used(oldest).unwrap(), Removal::Gone);
        assert!(files[9].exists() && !files[0].exists());
    }

    #[test]
    fn one_checker_at_a_time_through_check_size_lock() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        let files = ten_blobs(&c);
        // Another process (a Python ClientStorage: zc.lockfile takes the
        // same flock) is checking.
        let other = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.path().join("check_size.lock"))
            .unwrap();
        other.lock().unwrap();
        let stop = AtomicBool::new(false);
        let started = std::time::Instant::now();
        assert_eq!(check_size(dir.path(), 0, &stop).unwrap(), Checked::Busy);
        assert!(started.elapsed() >= CHECK_LOCK_RETRY, "tried a second time");
        assert_eq!(left(&files).len(), 10, "nothing removed");
        assert!(dir.path().join("check_size.attempt").exists());
        // The other one gone, a check runs and takes the request too.
        drop(other);
        assert_eq!(
            check_size(dir.path(), 2000, &stop).unwrap(),
            Checked::Ran {
                size: 2000,
                removed: 8
            }
        );
        assert!(!dir.path().join("check_size.attempt").exists());
        let lock = fs::read_to_string(dir.path().join("check_size.lock")).unwrap();
        assert_eq!(lock, format!(" {}\n", std::process::id()), "as zc.lockfile");
        // A stop request ends a check that waits for the lock.
        let other = File::open(dir.path().join("check_size.lock")).unwrap();
        other.lock().unwrap();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(check_size(dir.path(), 0, &stop).unwrap(), Checked::Stopped);
    }

    #[test]
    fn only_a_zeocache_directory_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".layout"), "bushy").unwrap();
        fs::create_dir(dir.path().join("1")).unwrap();
        fs::write(dir.path().join("1/0.0000000000000001.blob"), b"x").unwrap();
        let e = check_size(dir.path(), 0, &AtomicBool::new(false)).unwrap_err();
        assert!(e.to_string().contains("\"bushy\""), "{e}");
        assert!(dir.path().join("1/0.0000000000000001.blob").exists());
    }

    /// Waits until `checker` has finished `n` checks.
    fn wait_for(checker: &SizeChecker, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while checker.finished() < n {
            assert!(std::time::Instant::now() < deadline, "no check ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_checker_thread_checks_at_start_and_after_each_check_amount() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path()).unwrap();
        let files = ten_blobs(&c);
        // 5000 bytes, checked every 20 %: kept at 4000 or less.
        let checker = SizeChecker::start(c.base(), 5000, 20).unwrap();
        assert_eq!(checker.target(), 4000);
        wait_for(&checker, 1);
        assert_eq!(left(&files), [6, 7, 8, 9], "checked at start");
        // 999 bytes are not enough for a check; 1000 are.
        let more: Vec<PathBuf> = (20..24).map(|oid| put(&c, oid, 1000, 0)).collect();
        checker.added(999);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(checker.finished(), 1);
        checker.added(1);
        wait_for(&checker, 2);
        assert_eq!(scan(dir.path()).unwrap().1, 4000);
        assert!(more.iter().all(|p| p.exists()), "the newest stay");
        assert_eq!(left(&files), Vec::<usize>::new());
        checker.stop();
        checker.added(1_000_000);
        assert_eq!(checker.finished(), 2, "stopped");
        // Check amount 0 %: every addition asks for a check.
        let checker = SizeChecker::start(c.base(), 3000, 0).unwrap();
        wait_for(&checker, 1);
        assert_eq!(scan(dir.path()).unwrap().1, 3000);
        checker.added(1);
        wait_for(&checker, 2);
    }
}
