//! A Data.fs opened for raw record access, without building an index.
//!
//! The storage engine is built on this; tools that only walk records
//! (`fstail`, the verbose dumper, `fstest`) use it directly so that they
//! start instantly on files of any size and work on files the engine would
//! refuse.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, FileBackend, MmapBackend};
use crate::error::{Error, Result};
use crate::format::Magic;
use crate::reader::Reader;

/// How to read the file's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// Memory-map the file (default): loads are slices of the page cache.
    #[default]
    Mmap,
    /// `pread` every record.
    Pread,
}

/// The bytes of a Data.fs as they were when opened.
#[derive(Debug)]
pub struct DataFile {
    path: Arc<Path>,
    data: Arc<dyn Backend>,
}

impl DataFile {
    /// Opens `path` for reading; its size is fixed at this moment.
    pub fn open(path: impl AsRef<Path>, kind: BackendKind) -> Result<DataFile> {
        let path = path.as_ref().to_owned();
        let io = |op, source| Error::Io {
            path: path.clone(),
            op,
            source,
        };
        let file = File::open(&path).map_err(|e| io("open", e))?;
        let size = file.metadata().map_err(|e| io("stat", e))?.len();
        let data: Arc<dyn Backend> = match kind {
            BackendKind::Mmap => {
                Arc::new(MmapBackend::map(&file, size).map_err(|e| io("mmap", e))?)
            }
            BackendKind::Pread => Arc::new(FileBackend::new(Arc::new(file), size)),
        };
        Ok(DataFile {
            path: path.into(),
            data,
        })
    }

    /// Bytes from any backend (an in-memory image for tests and fuzzing),
    /// named `path` in messages.
    pub fn from_backend(path: impl AsRef<Path>, data: Arc<dyn Backend>) -> DataFile {
        DataFile {
            path: path.as_ref().into(),
            data,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes when opened.
    pub fn size(&self) -> u64 {
        self.data.len()
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.data.as_ref()
    }

    /// The backend, shared.
    pub fn shared_backend(&self) -> Arc<dyn Backend> {
        self.data.clone()
    }

    /// Typed reads of the whole file.
    pub fn reader(&self) -> Reader {
        Reader::new(self.data.clone(), self.path.clone(), self.size())
    }

    /// Typed reads of the first `end` bytes.
    pub fn reader_to(&self, end: u64) -> Reader {
        Reader::new(self.data.clone(), self.path.clone(), end)
    }

    /// The magic; `None` for an empty file.
    pub fn magic(&self) -> Result<Option<Magic>> {
        if self.size() == 0 {
            return Ok(None);
        }
        self.reader().magic().map(Some)
    }
}

/// `Data.fs` + `suffix`: the names of ZODB's companion files (`.index`,
/// `.lock`, `.tmp`, `.trN`, `.pack`, `.old`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
