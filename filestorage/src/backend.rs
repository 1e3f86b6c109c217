//! Offset-addressed access to a Data.fs's bytes.
//!
//! Every read names its position; there is no shared file cursor, so any
//! number of threads read concurrently without a lock (ZODB-py serialises
//! reads through `seek`+`read` on a shared file, or a pool of file objects).
//! Two implementations: [`MmapBackend`] (the default: zero-copy, a load is a
//! memcpy-free slice of the page cache) and [`FileBackend`] (`pread`, for
//! filesystems where mapping is undesirable and for fault injection).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

/// Read access to the bytes of one file at absolute positions.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Number of bytes readable.
    fn len(&self) -> u64;

    /// Whether the file holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `pos`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;

    /// `len` bytes from `pos` as a shared buffer: a slice of the mapping
    /// when mapped (no copy), a fresh buffer otherwise.
    fn bytes_at(&self, pos: u64, len: u64) -> io::Result<Bytes>;

    /// `len` bytes from `pos` borrowed without copying, when the backend can
    /// (a mapping); `None` means "use `read_exact_at`".
    fn slice_at(&self, pos: u64, len: u64) -> Option<&[u8]>;
}

fn eof(pos: u64, len: u64, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {pos} past end of file ({size} bytes)"),
    )
}

/// Bytes held in memory: a read-only memory mapping of a file (what
/// [`MmapBackend::map`] makes: loads are slices of the page cache, no copy)
/// or an image built in memory (tests, fuzzing).
#[derive(Clone)]
pub struct MemBackend(pub Bytes);

impl fmt::Debug for MemBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemBackend")
            .field("len", &self.0.len())
            .finish()
    }
}

/// Owner of the mapping inside [`Bytes::from_owner`].
struct MapOwner(memmap2::Mmap);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps files read-only.
#[derive(Debug)]
pub struct MmapBackend;

impl MmapBackend {
    /// Maps `file` read-only, `len` bytes from its start (`len` may exceed
    /// the file's size: the window a growing file is read through; only
    /// bytes below the committed end are ever read).
    pub fn map(file: &File, len: u64) -> io::Result<MemBackend> {
        if len == 0 {
            // A zero-length mapping is an error in mmap(2); nothing to read anyway.
            return Ok(MemBackend(Bytes::new()));
        }
        let len_usize = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        // SAFETY: the mapping is read-only and a FileStorage's committed bytes
        // are never modified in place: ZODB only appends, truncates bytes past
        // the last committed transaction (which no reader of this mapping has
        // indexed, so none is ever read), and pack replaces the file by
        // rename, which leaves this inode intact. Pages past the end of the
        // file are never touched (reads stop at the committed end). A process
        // that breaks this protocol (truncating committed data under us)
        // could make a read fault with SIGBUS; no ZODB implementation does.
        let map = unsafe { memmap2::MmapOptions::new().len(len_usize).map(file)? };
        // Random loads dominate; the kernel's default readahead wastes cache.
        let _ = map.advise(memmap2::Advice::Random);
        Ok(MemBackend(Bytes::from_owner(MapOwner(map))))
    }
}

impl MemBackend {
    fn range(&self, pos: u64, len: u64) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(pos).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        (end <= self.0.len()).then_some(start..end)
    }
}

impl Backend for MemBackend {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = self
            .slice_at(pos, buf.len() as u64)
            .ok_or_else(|| eof(pos, buf.len() as u64, self.len()))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn bytes_at(&self, pos: u64, len: u64) -> io::Result<Bytes> {
        let r = self
            .range(pos, len)
            .ok_or_else(|| eof(pos, len, self.len()))?;
        Ok(self.0.slice(r))
    }

    fn slice_at(&self, pos: u64, len: u64) -> Option<&[u8]> {
        self.0.get(self.range(pos, len)?)
    }
}

/// `pread`-based access; the size is fixed when created so that reads never
/// see bytes appended later by a concurrent writer.
#[derive(Debug, Clone)]
pub struct FileBackend {
    file: Arc<File>,
    len: u64,
}

impl FileBackend {
    /// Reads `file`'s first `len` bytes.
    pub fn new(file: Arc<File>, len: u64) -> FileBackend {
        FileBackend { file, len }
    }
}

impl Backend for FileBackend {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(eof(pos, buf.len() as u64, self.len));
        }
        self.file.read_exact_at(buf, pos)
    }

    fn bytes_at(&self, pos: u64, len: u64) -> io::Result<Bytes> {
        let n = usize::try_from(len).map_err(|_| eof(pos, len, self.len))?;
        if pos.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(eof(pos, len, self.len));
        }
        let mut v = vec![0u8; n];
        self.file.read_exact_at(&mut v, pos)?;
        Ok(Bytes::from(v))
    }

    fn slice_at(&self, _pos: u64, _len: u64) -> Option<&[u8]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn backends(content: &[u8]) -> Vec<Box<dyn Backend>> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        let len = content.len() as u64;
        let m = MmapBackend::map(&f, len).unwrap();
        vec![Box::new(m), Box::new(FileBackend::new(Arc::new(f), len))]
    }

    #[test]
    fn reads_at_positions_and_rejects_past_end() {
        for b in backends(b"FS30abcdefgh") {
            assert_eq!(b.len(), 12);
            let mut buf = [0u8; 4];
            b.read_exact_at(4, &mut buf).unwrap();
            assert_eq!(&buf, b"abcd");
            assert_eq!(&b.bytes_at(8, 4).unwrap()[..], b"efgh");
            assert_eq!(b.bytes_at(12, 0).unwrap().len(), 0);
            assert_eq!(
                b.read_exact_at(10, &mut buf).unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof
            );
            assert!(b.bytes_at(u64::MAX, 2).is_err());
        }
    }

    #[test]
    fn empty_file_maps() {
        let f = tempfile::tempfile().unwrap();
        let m = MmapBackend::map(&f, 0).unwrap();
        assert!(m.is_empty());
        assert!(m.bytes_at(0, 1).is_err());
    }

    #[test]
    fn mapped_bytes_outlive_backend() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"FS30hello").unwrap();
        let m = MmapBackend::map(&f, 9).unwrap();
        let s = m.bytes_at(4, 5).unwrap();
        drop(m);
        drop(f);
        assert_eq!(&s[..], b"hello");
    }
}
