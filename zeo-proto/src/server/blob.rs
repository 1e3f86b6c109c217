//! Blob files in ZODB's bushy layout, where Python clients and tools expect
//! them (ZODB: `blob.py` `FilesystemHelper`, `BushyLayout`).
//!
//! The revision of oid `00…0102` written by tid `03a1…07` lives at
//! `<dir>/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x02/0x03a1…07.blob`: one
//! directory level per oid byte, the file named by `oid_repr(tid)` (hex
//! without leading zero pairs). `<dir>/.layout` says `bushy`; uploads in
//! progress go to `<dir>/tmp`. ZEO's own tests read the server's blob files
//! at these paths, and a blob directory must stay usable by ZODB after the
//! server is replaced, so the layout is not ours to choose.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zodb_core::{Oid, ReadStorage, Tid};

/// The marker file naming the layout.
pub const LAYOUT_MARKER: &str = ".layout";
/// Suffix of committed blob files.
pub const BLOB_SUFFIX: &str = ".blob";
/// Size of the chunks blobs travel in, both ways (ZEO's 59000).
pub const CHUNK: usize = 59000;

/// A blob directory.
#[derive(Debug)]
pub struct BlobDir {
    base: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// `ZODB.utils.oid_repr`: `0x` and the hex digits without leading zero
/// pairs (`0x00` for zero).
pub fn id_repr(v: u64) -> String {
    let hex = format!("{v:016x}");
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0x00".to_owned()
    } else if trimmed.len() % 2 == 1 {
        format!("0x0{trimmed}")
    } else {
        format!("0x{trimmed}")
    }
}

fn parse_repr(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

impl BlobDir {
    /// Opens (creating it if need be) a bushy blob directory. A directory
    /// with another layout, or used without a marker (ZODB would pick the
    /// deprecated `lawn` layout), is refused.
    pub fn open(base: &Path) -> io::Result<BlobDir> {
        let marker = base.join(LAYOUT_MARKER);
        if marker.exists() {
            let layout = fs::read_to_string(&marker)?;
            if layout.trim() != "bushy" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: blob layout {:?} is not supported (only bushy)",
                        base.display(),
                        layout.trim()
                    ),
                ));
            }
        } else if base.exists() {
            let used = fs::read_dir(base)?
                .filter_map(Result::ok)
                .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
            if used {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: blob directory without a layout marker (ZODB's lawn layout) is \
                         not supported",
                        base.display()
                    ),
                ));
            }
        }
        let tmp = base.join("tmp");
        fs::create_dir_all(&tmp)?;
        if !marker.exists() {
            fs::write(&marker, "bushy")?;
        }
        Ok(BlobDir {
            base: base.to_owned(),
            tmp,
            counter: AtomicU64::new(0),
        })
    }

    /// Opens the blob directory of a server as a client that shares it
    /// (ClientStorage's `shared_blob_dir`): nothing is created, and the
    /// directory must say `bushy` in its `.layout`, which every server
    /// (ZODB's or ours) writes when it opens the directory. Anything else
    /// is a mistyped path or a client blob cache, and reading blobs from
    /// it would report existing blobs as missing.
    pub fn open_shared(base: &Path) -> io::Result<BlobDir> {
        // Absolute, so that the paths handed out stay right whatever the
        // process's working directory becomes.
        let base = std::path::absolute(base)?;
        let marker = base.join(LAYOUT_MARKER);
        let layout = match fs::read_to_string(&marker) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} does not exist: not a ZEO server's blob directory (the server \
                         writes it, saying bushy, when it opens its blob-dir)",
                        marker.display()
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        if layout.trim() != "bushy" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: layout {:?}, but a server's blob directory is \"bushy\" (a \
                     \"zeocache\" directory is a client's private blob cache)",
                    base.display(),
                    layout.trim()
                ),
            ));
        }
        Ok(BlobDir {
            tmp: base.join("tmp"),
            base,
            counter: AtomicU64::new(0),
        })
    }

    /// The directory for uncommitted files (`tmp`): ZODB's
    /// `FilesystemHelper.temp_dir`.
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The directory of an oid's revisions.
    pub fn oid_dir(&self, oid: Oid) -> PathBuf {
        let mut p = self.base.clone();
        for b in oid.to_bytes() {
            p.push(format!("0x{b:02x}"));
        }
        p
    }

    /// The file of one revision.
    pub fn path(&self, oid: Oid, tid: Tid) -> PathBuf {
        self.oid_dir(oid)
            .join(format!("{}{BLOB_SUFFIX}", id_repr(tid.0)))
    }

    /// A new empty file for an upload, in the `tmp` directory.
    pub fn temp_file(&self) -> io::Result<(PathBuf, File)> {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let path = self
                .tmp
                .join(format!("upload-{}-{n}.tmp", std::process::id()));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Where a client with a shared blob directory put a blob
    /// (`storeBlobShared`): `filename` must be a plain name ending in
    /// `.tmp` (or `.tmp` and one more character), as ZEO checks, so the
    /// file is in the oid's own directory and nowhere else. It must also
    /// be a regular file there: a symbolic link would be renamed into
    /// place as the blob and make `sendBlob` serve whatever it points at
    /// (ZEO does not check this).
    pub fn shared_upload(&self, oid: Oid, filename: &str) -> Option<PathBuf> {
        let plain = !filename.contains('/') && !filename.contains('\\') && filename != "..";
        let tmp_name = filename.ends_with(".tmp")
            || filename
                .char_indices()
                .last()
                .is_some_and(|(i, _)| filename.get(..i).is_some_and(|s| s.ends_with(".tmp")));
        if !(plain && tmp_name) {
            return None;
        }
        let path = self.oid_dir(oid).join(filename);
        fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_file())
            .then_some(path)
    }

    /// Moves the uncommitted file `blob` into `oid`'s directory under a
    /// fresh `.tmp` name, for `storeBlobShared` (ClientStorage's
    /// `storeBlob` with a shared directory): the server accepts a blob
    /// only from there. The name is reserved by creating the file
    /// exclusively, so clients on other hosts sharing the directory
    /// cannot pick it too, and the blob is then renamed over it. Returns
    /// the path and the name to send.
    pub fn take_shared_upload(
        &self,
        oid: Oid,
        serial: Tid,
        blob: &Path,
    ) -> io::Result<(PathBuf, String)> {
        let dir = self.oid_dir(oid);
        fs::create_dir_all(&dir)?;
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}-{}-{n}.tmp", id_repr(serial.0), std::process::id());
            let path = dir.join(&name);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = rename_or_copy(blob, &path) {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            return Ok((path, name));
        }
    }

    /// Moves an uploaded file to be the blob of `oid` at `tid`.
    pub fn install(&self, from: &Path, oid: Oid, tid: Tid) -> io::Result<PathBuf> {
        let target = self.path(oid, tid);
        fs::create_dir_all(self.oid_dir(oid))?;
        rename_or_copy(from, &target)?;
        Ok(target)
    }

    /// Copies the blob of `oid` at `from` to be its blob at `to` (undo).
    pub fn copy(&self, oid: Oid, from: Tid, to: Tid) -> io::Result<PathBuf> {
        let target = self.path(oid, to);
        fs::create_dir_all(self.oid_dir(oid))?;
        fs::copy(self.path(oid, from), &target)?;
        Ok(target)
    }

    /// Removes blob files whose revision the storage no longer has, and
    /// emptied oid directories (ZODB's `BlobStorage._packUndoing`: slow but
    /// safe, it asks the storage about every file).
    pub fn pack(&self, storage: &dyn ReadStorage) -> io::Result<()> {
        let mut oid_dirs = Vec::new();
        self.collect_oid_dirs(&self.base, 0, 0, &mut oid_dirs)?;
        for (oid, dir) in oid_dirs {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(serial) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(BLOB_SUFFIX))
                    .and_then(parse_repr)
                else {
                    continue;
                };
                if let Err(e) = storage.load_serial(Oid(oid), Tid(serial))
                    && e.is_pos_key_error()
                {
                    fs::remove_file(entry.path())?;
                }
            }
            if fs::read_dir(&dir)?.next().is_none() {
                fs::remove_dir(&dir)?;
            }
        }
        Ok(())
    }

    fn collect_oid_dirs(
        &self,
        dir: &Path,
        depth: usize,
        prefix: u64,
        out: &mut Vec<(u64, PathBuf)>,
    ) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some(byte) = name.to_str().filter(|n| n.len() == 4).and_then(parse_repr) else {
                continue;
            };
            let value = prefix << 8 | byte;
            if depth == 7 {
                out.push((value, entry.path()));
            } else {
                self.collect_oid_dirs(&entry.path(), depth + 1, value, out)?;
            }
        }
        Ok(())
    }
}

/// `ZODB.blob.rename_or_copy_blob`: a rename, or a copy across filesystems.
fn rename_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc_exdev()) => {
            fs::copy(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// EXDEV on Linux and the BSDs.
const fn libc_exdev() -> i32 {
    18
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;

    #[test]
    fn paths_are_zodbs_bushy_layout() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobDir::open(dir.path()).unwrap();
        let p = b.path(Oid(1), Tid(0x03a1_b2c3_d4e5_f607));
        assert_eq!(
            p.strip_prefix(dir.path()).unwrap(),
            Path::new("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x03a1b2c3d4e5f607.blob")
        );
        let p = b.path(Oid(0x1234), Tid(0));
        assert_eq!(
            p.strip_prefix(dir.path()).unwrap(),
            Path::new("0x00/0x00/0x00/0x00/0x00/0x00/0x12/0x34/0x00.blob")
        );
        assert_eq!(id_repr(0x100), "0x0100");
        assert_eq!(
            fs::read_to_string(dir.path().join(".layout")).unwrap(),
            "bushy"
        );
        assert!(dir.path().join("tmp").is_dir());
    }

    #[test]
    fn shared_uploads_are_regular_files_in_the_oids_directory() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobDir::open(dir.path()).unwrap();
        let oid_dir = b.oid_dir(Oid(1));
        fs::create_dir_all(&oid_dir).unwrap();
        for name in ["abc.tmp", "abc.tmp-", "x.blob"] {
            fs::write(oid_dir.join(name), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", oid_dir.join("link.tmp")).unwrap();
        assert_eq!(
            b.shared_upload(Oid(1), "abc.tmp"),
            Some(oid_dir.join("abc.tmp"))
        );
        assert!(b.shared_upload(Oid(1), "abc.tmp-").is_some());
        assert!(b.shared_upload(Oid(1), "../x.tmp").is_none());
        assert!(b.shared_upload(Oid(1), "x.blob").is_none());
        assert!(b.shared_upload(Oid(1), "missing.tmp").is_none());
        assert!(b.shared_upload(Oid(1), "link.tmp").is_none());

        // What a sharing client sends is what the server accepts.
        let client = BlobDir::open_shared(dir.path()).unwrap();
        let src = client.temp_dir().join("new");
        fs::write(&src, b"blob").unwrap();
        let (path, name) = client
            .take_shared_upload(Oid(0x0102), Tid(0x0304), &src)
            .unwrap();
        assert!(!src.exists());
        assert!(
            name.starts_with("0x0304-") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(b.shared_upload(Oid(0x0102), &name), Some(path.clone()));
        assert_eq!(fs::read(&path).unwrap(), b"blob");
    }

    #[test]
    fn sharing_clients_need_a_bushy_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = BlobDir::open_shared(dir.path()).unwrap_err().to_string();
        assert!(e.contains(".layout does not exist"), "{e}");
        fs::write(dir.path().join(".layout"), "zeocache").unwrap();
        let e = BlobDir::open_shared(dir.path()).unwrap_err().to_string();
        assert!(e.contains("\"zeocache\"") && e.contains("bushy"), "{e}");
        fs::write(dir.path().join(".layout"), "bushy\n").unwrap();
        BlobDir::open_shared(dir.path()).unwrap();
        assert!(!dir.path().join("tmp").exists(), "a client creates nothing");
    }

    #[test]
    fn lawn_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("0x01"), b"").unwrap();
        assert!(BlobDir::open(dir.path()).is_err());
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".layout"), b"lawn").unwrap();
        assert!(BlobDir::open(dir.path()).is_err());
    }
}
