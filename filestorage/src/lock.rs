//! The `Data.fs.lock` file, compatible with zc.lockfile (what Python ZODB
//! uses): an exclusive BSD `flock` on the whole file, taken without
//! waiting, and the holder's pid written as `" <pid>\n"`. So Python ZODB
//! cannot open a file for writing while we hold it, and the reverse.
//!
//! The file is never deleted: removing a lock file another process is
//! about to lock would let two writers in.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{}: locked by another process{}", path.display(), holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into it (`pid 1234`), if readable.
        holder: Option<String>,
    },
    /// The lock file could not be opened or written.
    #[error("{}: cannot take the lock", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (the descriptor closes).
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock at `path`, creating the file if needed, and records
    /// our pid in it as zc.lockfile does.
    pub fn lock(path: impl AsRef<Path>) -> Result<LockFile, LockError> {
        let path = path.as_ref().to_owned();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux, as zc.lockfile's.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut content = String::new();
                let holder = file
                    .read_to_string(&mut content)
                    .ok()
                    .map(|_| content.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .map(|c| {
                        if c.bytes().all(|b| b.is_ascii_digit()) {
                            format!("pid {c}")
                        } else {
                            c
                        }
                    });
                return Err(LockError::Held { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let content = format!(" {}\n", std::process::id());
        file.write_all(content.as_bytes()).map_err(io)?;
        file.set_len(content.len() as u64).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(LockFile { file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlocking first
        // makes the release independent of any duplicate of it.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("Data.fs.lock");
        let a = LockFile::lock(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!(" {}\n", std::process::id())
        );
        match LockFile::lock(&p) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, Some(format!("pid {}", std::process::id())))
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(a);
        let _b = LockFile::lock(&p).unwrap();
        assert!(p.exists());
    }
}
