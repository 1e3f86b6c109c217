//! Storage URLs: which database a `zodbrs` command works on, in zodburi's
//! forms, and opening one as the `zodb_core` storage traits.
//!
//! | form | storage |
//! |---|---|
//! | `PATH`, `file:///abs/Data.fs`, `file://rel/Data.fs` | a FileStorage |
//! | `zeo://host:port?storage=1&read_only=true` | a ZEO server over TCP (port 9991 when omitted) |
//! | `zeo://[::1]:8100` | the same over IPv6 |
//! | `zeo:///path/to/socket` | a ZEO server on a Unix socket |
//!
//! Query keys follow zodburi (values are percent-decoded; booleans are
//! `1/on/true/t/yes` and `0/off/false/f/no/` (empty); sizes take a
//! `kb`/`mb`/`gb` suffix, powers of 1024):
//!
//! - `file:` `read_only`; `create=false` (`create=true`, ZODB's "start a
//!   new empty storage over the file", is refused: zodbrs commands that
//!   write create a missing file themselves and never discard one).
//! - `zeo:` `storage` (name, default `1`), `read_only`, `cache_size` (bytes
//!   of the client's object cache), `wait` / `wait_for_server_on_startup`
//!   (wait for a server that is not up yet), `wait_timeout` (seconds),
//!   `min_disconnect_poll` / `max_disconnect_poll` (reconnection backoff,
//!   seconds), `name`, `client_label`, and the blob keys:
//!   - `blob_dir`: the client's blob cache directory (created in ZEO's
//!     `zeocache` layout); without it blobs are unsupported;
//!   - `shared_blob_dir` (boolean): `blob_dir` is instead the server's own
//!     blob directory, shared over a file system (it must say `bushy` in
//!     its `.layout`); blobs are read and committed there, none is sent
//!     over the connection;
//!   - `blob_cache_size` (a size, as `cache_size`): the size the blob cache
//!     is kept near by removing the least recently used blobs; unbounded
//!     when absent. Only for a private cache: refused with
//!     `shared_blob_dir=true`, and without `blob_dir`;
//!   - `blob_cache_size_check` (an integer, zodburi's way: booleans count
//!     as 1 and 0): how much may enter the cache between two size checks,
//!     in percent of `blob_cache_size` (default 10, below 100).
//!
//!   `client`, `var` and `drop_cache_rather_verify` (ClientStorage's
//!   persistent cache, which this client does not keep) and `debug` are
//!   accepted and ignored.
//! - Both: the `ZODB.DB` keys zodburi passes to the database, not to the
//!   storage (`database_name`, `connection_cache_size`, ...), are accepted
//!   and ignored: zodbrs opens storages, not databases.
//!
//! Anything else (`demostorage`, ZEO 4 authentication, an unknown key) is
//! an error naming the key, and so are blob keys that cannot work
//! together, so a URL never silently means less than it says. (ZEO's
//! ClientStorage ignores `blob_cache_size` with a shared directory or
//! without `blob_dir`; here that is an error.)
//!
//! ```no_run
//! use zodbrs::storage_url::{open_read, open_write};
//! let src = open_read("zeo://127.0.0.1:8100?storage=1")?;
//! let dst = open_write("file:///tmp/copy.fs", true)?;
//! println!("{} at {}", src.name(), src.last_transaction());
//! # let _ = dst;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use filestorage::format::Magic;
use filestorage::{Durability, FileStorage};
use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient, ZeoError};
use zodb_core::{ReadStorage, WriteStorage};

use crate::tools::info::StorageSize;

/// zodburi's default ZEO port when a `zeo://host` URL names none.
pub const DEFAULT_ZEO_PORT: u16 = 9991;

/// A parsed storage URL.
#[derive(Debug, Clone)]
pub enum StorageUrl {
    /// A FileStorage (a bare path, or `file://`).
    File {
        /// The Data.fs, as given (not normalised).
        path: PathBuf,
        /// `read_only=true`: the URL forbids writing.
        read_only: bool,
    },
    /// A ZEO server.
    Zeo {
        /// TCP `host:port` or a Unix socket.
        address: Address,
        /// Storage name, read-only, cache size, timeouts, blobs... from the
        /// query (boxed: they are most of the URL's size).
        options: Box<ClientOptions>,
    },
}

/// A storage URL that cannot be understood; the message names the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage URL {url:?}: {what}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub what: String,
}

/// Why a storage could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is malformed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Opening the FileStorage failed.
    #[error(transparent)]
    File(#[from] filestorage::Error),
    /// Connecting to the ZEO server failed.
    #[error(transparent)]
    Zeo(#[from] ZeoError),
    /// A command that writes was given a URL that says `read_only`.
    #[error("{url}: the URL says read_only, but this command writes")]
    ReadOnlyUrl {
        /// The URL as given.
        url: String,
    },
    /// A command that changes an existing database was given a path
    /// where there is none.
    #[error("{}: no such database", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A command that reads the FileStorage format itself was given a
    /// ZEO URL.
    #[error("{tool} reads the Data.fs format itself and needs a file, not a ZEO server ({url})")]
    FileOnly {
        /// The command.
        tool: String,
        /// The URL as given.
        url: String,
    },
}

/// How to open a storage: for reading only (the default), or for writing.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// Open for writing: the file's `.lock` is taken; a ZEO client
    /// registers read-write.
    pub write: bool,
    /// Writing only: create a FileStorage that does not exist yet (with
    /// `new_magic`). Without it a missing file is [`OpenError::Missing`].
    /// Meaningless for ZEO (the server's database exists).
    pub create: bool,
    /// Writing only: bulk work restarted from scratch if interrupted
    /// (copy, restore, import). A FileStorage then syncs only at
    /// [`Opened::sync`] and when dropped, not at every commit; a ZEO
    /// server makes each commit durable anyway.
    pub bulk: bool,
    /// The magic of a FileStorage created here.
    pub new_magic: Magic,
}

impl Default for Access {
    fn default() -> Access {
        Access::READ
    }
}

impl Access {
    /// Read-only.
    pub const READ: Access = Access {
        write: false,
        create: false,
        bulk: false,
        new_magic: Magic::Fs30,
    };

    /// Read-write; `create`: a missing FileStorage is created.
    pub fn write(create: bool) -> Access {
        Access {
            write: true,
            create,
            ..Access::READ
        }
    }

    /// The same, for bulk work (see [`Access::bulk`]).
    pub fn bulk(self) -> Access {
        Access { bulk: true, ..self }
    }

    /// The same, creating FileStorages with `magic`.
    pub fn magic(self, magic: Magic) -> Access {
        Access {
            new_magic: magic,
            ..self
        }
    }
}

/// An opened storage, by backend, for the few things the traits do not
/// say (a FileStorage's path, its deferred sync).
#[derive(Debug, Clone)]
pub enum Opened {
    /// A FileStorage and its path.
    File(Arc<FileStorage>, PathBuf),
    /// A ZEO client.
    Zeo(Arc<ZeoClient>),
}

impl Opened {
    /// The storage, for reading.
    pub fn read(&self) -> &dyn ReadStorage {
        match self {
            Opened::File(fs, _) => &**fs,
            Opened::Zeo(z) => &**z,
        }
    }

    /// The storage, for writing (opened with [`Access::write`], else writes
    /// fail with `ReadOnly`).
    pub fn write(&self) -> &dyn WriteStorage {
        match self {
            Opened::File(fs, _) => &**fs,
            Opened::Zeo(z) => &**z,
        }
    }

    /// The storage with ZODB's `getSize()` (for `info`).
    pub fn sized(&self) -> &dyn StorageSize {
        match self {
            Opened::File(fs, _) => &**fs,
            Opened::Zeo(z) => &**z,
        }
    }

    /// A shared handle for reading.
    pub fn read_arc(&self) -> Arc<dyn ReadStorage> {
        match self {
            Opened::File(fs, _) => fs.clone(),
            Opened::Zeo(z) => z.clone(),
        }
    }

    /// A shared handle for writing.
    pub fn write_arc(&self) -> Arc<dyn WriteStorage> {
        match self {
            Opened::File(fs, _) => fs.clone(),
            Opened::Zeo(z) => z.clone(),
        }
    }

    /// Makes every finished transaction durable: a FileStorage opened for
    /// bulk work fsyncs; otherwise nothing to do.
    pub fn sync(&self) -> Result<(), filestorage::Error> {
        match self {
            Opened::File(fs, _) if !fs.is_read_only() => fs.sync(),
            _ => Ok(()),
        }
    }

    /// The FileStorage, if this is one.
    pub fn file(&self) -> Option<(&Arc<FileStorage>, &Path)> {
        match self {
            Opened::File(fs, p) => Some((fs, p)),
            Opened::Zeo(_) => None,
        }
    }

    /// What `zodb info` prints as `name`: a file's path normalised as
    /// zodburi does, a ZEO client's `getName()`.
    pub fn info_name(&self) -> String {
        match self {
            Opened::File(_, p) => crate::tools::info::normpath(&p.to_string_lossy()),
            Opened::Zeo(z) => z.name(),
        }
    }
}

/// `getSize()` of a ZEO storage: the server's `get_info` size, kept
/// current by its `info` messages.
impl StorageSize for ZeoClient {
    fn storage_size(&self) -> u64 {
        ZeoClient::storage_size(self)
    }
}

/// Parses `url` (see the module documentation).
pub fn parse(url: &str) -> Result<StorageUrl, UrlError> {
    url.parse()
}

/// Opens `url` for reading: a FileStorage read-only (nothing is written
/// beside it), a ZEO server registered read-only.
pub fn open_read(url: &str) -> Result<Arc<dyn ReadStorage>, OpenError> {
    Ok(open(&parse(url)?, Access::READ)?.read_arc())
}

/// Opens `url` for writing; `create`: a missing FileStorage is created
/// (FS30). Every commit is durable when `finish` returns.
pub fn open_write(url: &str, create: bool) -> Result<Arc<dyn WriteStorage>, OpenError> {
    Ok(open(&parse(url)?, Access::write(create))?.write_arc())
}

/// Opens `url` as `access` says, keeping the backend visible.
pub fn open(url: &StorageUrl, access: Access) -> Result<Opened, OpenError> {
    match url {
        StorageUrl::File { path, read_only } => {
            if access.write && *read_only {
                return Err(OpenError::ReadOnlyUrl {
                    url: url.to_string(),
                });
            }
            if !access.write {
                return Ok(Opened::File(
                    Arc::new(FileStorage::open_read_only(path)?),
                    path.clone(),
                ));
            }
            if !access.create && !path.exists() {
                return Err(OpenError::Missing { path: path.clone() });
            }
            let opts = filestorage::OpenOptions {
                new_magic: access.new_magic,
                durability: if access.bulk {
                    Durability::Deferred
                } else {
                    Durability::Immediate
                },
                ..filestorage::OpenOptions::read_write()
            };
            Ok(Opened::File(
                Arc::new(FileStorage::open(path, &opts)?),
                path.clone(),
            ))
        }
        StorageUrl::Zeo { address, options } => {
            if access.write && options.read_only {
                return Err(OpenError::ReadOnlyUrl {
                    url: url.to_string(),
                });
            }
            let mut options = ClientOptions::clone(options);
            if !access.write {
                options.read_only = true;
            }
            Ok(Opened::Zeo(Arc::new(ZeoClient::connect(
                address.clone(),
                options,
            )?)))
        }
    }
}

/// The Data.fs `url` names, for the tools that read the file format itself
/// (`fsdump`, `fstail`, `fstest`, `fsrefs`, `fsoids`, `reindex`): a ZEO URL
/// is [`OpenError::FileOnly`].
pub fn file_only(url: &str, tool: &str) -> Result<PathBuf, OpenError> {
    match parse(url)? {
        StorageUrl::File { path, .. } => Ok(path),
        StorageUrl::Zeo { .. } => Err(OpenError::FileOnly {
            tool: tool.to_owned(),
            url: url.to_owned(),
        }),
    }
}

impl fmt::Display for StorageUrl {
    /// The URL in canonical form (`file://` paths, `zeo://` with the
    /// storage name when it is not `1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::File { path, read_only } => {
                write!(f, "file://{}", path.display())?;
                if *read_only {
                    f.write_str("?read_only=true")?;
                }
                Ok(())
            }
            StorageUrl::Zeo { address, options } => {
                match address {
                    Address::Tcp { .. } => write!(f, "zeo://{address}")?,
                    Address::Unix(p) => write!(f, "zeo://{}", p.display())?,
                }
                let mut sep = '?';
                if options.storage != "1" {
                    write!(f, "{sep}storage={}", options.storage)?;
                    sep = '&';
                }
                if options.read_only {
                    write!(f, "{sep}read_only=true")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for StorageUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<StorageUrl, UrlError> {
        let err = |what: String| UrlError {
            url: url.to_owned(),
            what,
        };
        if url.is_empty() {
            return Err(err("empty".into()));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            // No scheme: a path, taken as is (`?` and all).
            return Ok(StorageUrl::File {
                path: PathBuf::from(url),
                read_only: false,
            });
        };
        if !scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            // `./odd://name`: a path that happens to contain `://`.
            return Ok(StorageUrl::File {
                path: PathBuf::from(url),
                read_only: false,
            });
        }
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, q),
            None => (rest, ""),
        };
        let body = body.split_once('#').map_or(body, |(b, _)| b);
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        let params = parse_query(query).map_err(err)?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if body.is_empty() {
                    return Err(err("file:// without a path".into()));
                }
                let mut read_only = false;
                for (k, v) in &params {
                    match k.as_str() {
                        "read_only" => read_only = boolean(k, v).map_err(err)?,
                        "create" => {
                            if boolean(k, v).map_err(err)? {
                                return Err(err(
                                    "create=true (start a new empty storage over the file) is \
                                     refused: commands that write create a missing file themselves"
                                        .into(),
                                ));
                            }
                        }
                        k if DB_KEYS.contains(&k) => {}
                        "quota" | "blobstorage_dir" | "blobstorage_layout" | "demostorage"
                        | "packer" | "pack_gc" | "pack_keep_old" | "blob_dir" => {
                            return Err(err(format!("{k}: not supported by zodbrs")));
                        }
                        _ => return Err(err(format!("unknown key {k:?} for file://"))),
                    }
                }
                Ok(StorageUrl::File {
                    path: PathBuf::from(body),
                    read_only,
                })
            }
            "zeo" => {
                let address = zeo_address(body).map_err(err)?;
                let mut options = ClientOptions::default();
                for (k, v) in &params {
                    match k.as_str() {
                        "storage" => {
                            if v.is_empty() {
                                return Err(err("storage: empty name".into()));
                            }
                            options.storage = v.clone();
                        }
                        "read_only" => options.read_only = boolean(k, v).map_err(err)?,
                        "cache_size" => {
                            options.cache_size = usize::try_from(byte_size(k, v).map_err(err)?)
                                .map_err(|_| err(format!("cache_size={v}: too large")))?;
                        }
                        "wait" | "wait_for_server_on_startup" => {
                            options.wait = boolean(k, v).map_err(err)?;
                        }
                        "wait_timeout" => options.wait_timeout = seconds(k, v).map_err(err)?,
                        "min_disconnect_poll" => {
                            options.min_backoff = seconds(k, v).map_err(err)?;
                        }
                        "max_disconnect_poll" => {
                            options.max_backoff = seconds(k, v).map_err(err)?;
                        }
                        "name" => options.name = Some(v.clone()),
                        "client_label" => options.client_label = Some(v.clone()),
                        // ClientStorage's persistent cache: this client keeps
                        // its cache in memory only, so the file is not used.
                        "client" | "var" | "drop_cache_rather_verify" => {}
                        "debug" => {
                            boolean(k, v).map_err(err)?;
                        }
                        k if DB_KEYS.contains(&k) => {}
                        "blob_dir" => {
                            if v.is_empty() {
                                return Err(err("blob_dir: empty path".into()));
                            }
                            options.blob_dir = Some(PathBuf::from(v));
                        }
                        "shared_blob_dir" => {
                            options.shared_blob_dir = boolean(k, v).map_err(err)?
                        }
                        "blob_cache_size" => {
                            options.blob_cache_size = Some(byte_size(k, v).map_err(err)?);
                        }
                        "blob_cache_size_check" => {
                            options.blob_cache_size_check = integer(k, v)
                                .map_err(err)?
                                .try_into()
                                .ok()
                                .filter(|&p: &u8| p < 100)
                                .ok_or_else(|| {
                                    err(format!(
                                        "{k}={v}: a percentage of blob_cache_size, from 0 to 99"
                                    ))
                                })?;
                        }
                        "read_only_fallback" | "demostorage" | "username" | "password"
                        | "realm" => {
                            return Err(err(format!("{k}: not supported by zodbrs")));
                        }
                        _ => return Err(err(format!("unknown key {k:?} for zeo://"))),
                    }
                }
                if options.blob_dir.is_none() {
                    for (set, key) in [
                        (options.shared_blob_dir, "shared_blob_dir=true"),
                        (options.blob_cache_size.is_some(), "blob_cache_size"),
                    ] {
                        if set {
                            return Err(err(format!("{key} needs blob_dir")));
                        }
                    }
                }
                if options.shared_blob_dir && options.blob_cache_size.is_some() {
                    return Err(err(
                        "blob_cache_size limits a private blob cache, but shared_blob_dir=true \
                         makes blob_dir the server's own directory, which a client never prunes"
                            .into(),
                    ));
                }
                if options.min_backoff > options.max_backoff {
                    return Err(err(format!(
                        "min_disconnect_poll ({:?}) is above max_disconnect_poll ({:?})",
                        options.min_backoff, options.max_backoff
                    )));
                }
                Ok(StorageUrl::Zeo {
                    address,
                    options: Box::new(options),
                })
            }
            other => Err(err(format!(
                "unknown scheme {other:?} (zodbrs opens file:// and zeo:// URLs, or a path)"
            ))),
        }
    }
}

/// zodburi's database keys (given to `ZODB.DB`, not to the storage).
const DB_KEYS: &[&str] = &[
    "database_name",
    "connection_cache_size",
    "connection_cache_size_bytes",
    "connection_historical_cache_size",
    "connection_historical_cache_size_bytes",
    "connection_historical_pool_size",
    "connection_historical_timeout",
    "connection_large_record_size",
    "connection_pool_size",
];

/// The address of `zeo://BODY`: `host[:port]`, `[v6]:port`, or `/socket`.
fn zeo_address(body: &str) -> Result<Address, String> {
    if body.is_empty() {
        return Err("zeo:// without a host or a socket path".into());
    }
    if body.starts_with('/') {
        return Ok(Address::Unix(PathBuf::from(body)));
    }
    if let Some((netloc, path)) = body.split_once('/')
        && !path.is_empty()
    {
        return Err(format!(
            "path {:?} after {netloc:?}: a Unix socket is zeo:///path (three slashes)",
            format!("/{path}")
        ));
    }
    let netloc = body.trim_end_matches('/');
    if netloc.contains('@') {
        return Err(format!("{netloc:?}: user names are not supported"));
    }
    let (host, port) = if let Some(v6) = netloc.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("host {netloc:?}: '[' without ']'"))?;
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("{after:?} after the IPv6 address [{host}]")),
            },
        }
    } else {
        match netloc.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "host {netloc:?}: write an IPv6 address in brackets, [::1]:8100"
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (netloc, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{netloc:?}: no host"));
    }
    let port = match port {
        None => DEFAULT_ZEO_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {p:?}: not a number from 1 to 65535"))?,
    };
    Ok(Address::tcp(host.to_ascii_lowercase(), port))
}

/// `k=v&k=v` as Python's `parse_qsl`: `+` is a space, `%XX` decoded,
/// empty pairs skipped. A key given twice is an error (zodburi keeps the
/// last one silently).
fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split(['&', ';']) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v)?;
        if k.is_empty() {
            return Err(format!("query {pair:?}: empty key"));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("key {k:?} given twice"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?}: '%' not followed by two hex digits"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: not UTF-8 once decoded"))
}

/// zodburi's booleans (also plain integers, nonzero = true).
fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "t" | "yes" => Ok(true),
        "" | "0" | "off" | "false" | "f" | "no" => Ok(false),
        other => other
            .parse::<i64>()
            .map(|n| n != 0)
            .map_err(|_| format!("{key}={v}: not a boolean (true/false, 1/0, on/off, yes/no)")),
    }
}

/// zodburi's integers: the boolean words count as 1 and 0 (`convert_int`).
fn integer(key: &str, v: &str) -> Result<i64, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "t" | "yes" => Ok(1),
        "" | "0" | "off" | "false" | "f" | "no" => Ok(0),
        other => other
            .parse::<i64>()
            .map_err(|_| format!("{key}={v}: not an integer")),
    }
}

/// A byte count with an optional `kb`/`mb`/`gb` suffix (powers of 1024).
fn byte_size(key: &str, v: &str) -> Result<u64, String> {
    let bad = || format!("{key}={v}: not a size (a number of bytes, or with kb, mb, gb)");
    let lower = v.trim().to_ascii_lowercase();
    let (num, mult) = match lower.len().checked_sub(2).map(|i| lower.split_at(i)) {
        Some((n, "kb")) => (n, 1u64 << 10),
        Some((n, "mb")) => (n, 1 << 20),
        Some((n, "gb")) => (n, 1 << 30),
        _ => (lower.as_str(), 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(bad)
}

/// Seconds, integer or not (ClientStorage takes floats for these).
fn seconds(key: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{key}={v}: not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeo(url: &str) -> (Address, ClientOptions) {
        match parse(url).unwrap() {
            StorageUrl::Zeo { address, options } => (address, *options),
            other => panic!("{url}: {other:?}"),
        }
    }

    fn file(url: &str) -> (PathBuf, bool) {
        match parse(url).unwrap() {
            StorageUrl::File { path, read_only } => (path, read_only),
            other => panic!("{url}: {other:?}"),
        }
    }

    fn error(url: &str) -> String {
        parse(url).unwrap_err().to_string()
    }

    #[test]
    fn files() {
        assert_eq!(file("Data.fs"), (PathBuf::from("Data.fs"), false));
        assert_eq!(file("/a/b?c.fs"), (PathBuf::from("/a/b?c.fs"), false));
        assert_eq!(
            file("file:///abs/Data.fs"),
            (PathBuf::from("/abs/Data.fs"), false)
        );
        assert_eq!(
            file("file://rel/Data.fs"),
            (PathBuf::from("rel/Data.fs"), false)
        );
        assert_eq!(
            file("file:///x.fs?read_only=1&database_name=main&connection_cache_size=5"),
            (PathBuf::from("/x.fs"), true)
        );
        assert_eq!(file("file:///x.fs?create=false").0, PathBuf::from("/x.fs"));
        assert_eq!(file("./odd://name").0, PathBuf::from("./odd://name"));
    }

    #[test]
    fn zeo_tcp_and_unix() {
        let (a, o) = zeo("zeo://localhost:8100");
        assert_eq!(a, Address::tcp("localhost", 8100));
        assert_eq!(o.storage, "1");
        assert!(!o.read_only);
        assert_eq!(
            zeo("zeo://Example.COM").0,
            Address::tcp("example.com", 9991)
        );
        assert_eq!(zeo("zeo://[::1]:8100/").0, Address::tcp("::1", 8100));
        assert_eq!(zeo("zeo://[::1]").0, Address::tcp("::1", 9991));
        assert_eq!(
            zeo("zeo:///run/zeo.sock?storage=main").0,
            Address::Unix("/run/zeo.sock".into())
        );
        let (_, o) = zeo(
            "zeo://h:1?storage=main&read_only=true&cache_size=25MB&wait=yes&wait_timeout=2.5\
             &min_disconnect_poll=1&max_disconnect_poll=30&name=x%20y&client=c&var=/tmp",
        );
        assert_eq!(o.storage, "main");
        assert!(o.read_only && o.wait);
        assert_eq!(o.cache_size, 25 << 20);
        assert_eq!(o.wait_timeout, Duration::from_millis(2500));
        assert_eq!(o.min_backoff, Duration::from_secs(1));
        assert_eq!(o.max_backoff, Duration::from_secs(30));
        assert_eq!(o.name.as_deref(), Some("x y"));
        assert_eq!(zeo("zeo://h:1?cache_size=0").1.cache_size, 0);
        assert_eq!(zeo("zeo://h:1?cache_size=4kb").1.cache_size, 4096);
        assert!(!zeo("zeo://h:1?read_only=").1.read_only);
        let o = zeo("zeo://h:1?blob_dir=/var/cache/b%20c&shared_blob_dir=false").1;
        assert_eq!(o.blob_dir, Some(PathBuf::from("/var/cache/b c")));
        assert!(!o.shared_blob_dir);
        assert_eq!(zeo("zeo://h:1").1.blob_dir, None);
    }

    #[test]
    fn zeo_blob_keys() {
        let o = zeo("zeo://h:1?blob_dir=/srv/zeo/blobs&shared_blob_dir=true").1;
        assert_eq!(o.blob_dir, Some(PathBuf::from("/srv/zeo/blobs")));
        assert!(o.shared_blob_dir);
        assert_eq!(o.blob_cache_size, None);
        assert!(
            zeo("zeo://h:1?blob_dir=/b&shared_blob_dir=yes")
                .1
                .shared_blob_dir
        );
        // No limit unless asked; ClientStorage's 10 % check.
        let o = zeo("zeo://h:1?blob_dir=/b").1;
        assert_eq!((o.blob_cache_size, o.blob_cache_size_check), (None, 10));
        // zodburi's sizes (ZConfig's suffixes, any case, powers of 1024).
        for (v, bytes) in [
            ("1000", 1000),
            ("1mb", 1 << 20),
            ("100MB", 100 << 20),
            ("2Gb", 2 << 30),
            ("64kb", 64 << 10),
            ("0", 0),
        ] {
            let o = zeo(&format!("zeo://h:1?blob_dir=/b&blob_cache_size={v}")).1;
            assert_eq!(o.blob_cache_size, Some(bytes), "{v}");
        }
        let o = zeo("zeo://h:1?blob_dir=/b&blob_cache_size=1gb&blob_cache_size_check=25").1;
        assert_eq!(o.blob_cache_size, Some(1 << 30));
        assert_eq!(o.blob_cache_size_check, 25);
        // zodburi reads it as an integer, booleans included.
        for (v, pct) in [("0", 0), ("99", 99), ("true", 1), ("off", 0)] {
            let url =
                format!("zeo://h:1?blob_dir=/b&blob_cache_size=1mb&blob_cache_size_check={v}");
            assert_eq!(zeo(&url).1.blob_cache_size_check, pct, "{v}");
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        for (url, part) in [
            ("", "empty"),
            ("http://x", "unknown scheme \"http\""),
            ("zeo://", "without a host"),
            ("zeo://h:port", "port \"port\""),
            ("zeo://h:0", "port \"0\""),
            ("zeo://h:70000", "port \"70000\""),
            ("zeo://::1:8100", "brackets"),
            ("zeo://[::1:8100", "without ']'"),
            ("zeo://h:1/sock", "three slashes"),
            (
                "zeo://h:1?read_only=maybe",
                "read_only=maybe: not a boolean",
            ),
            ("zeo://h:1?cache_size=big", "cache_size=big: not a size"),
            ("zeo://h:1?wait_timeout=-1", "wait_timeout=-1"),
            ("zeo://h:1?storage=", "storage: empty name"),
            ("zeo://h:1?sotrage=1", "unknown key \"sotrage\""),
            ("zeo://h:1?blob_dir=", "blob_dir: empty path"),
            (
                "zeo://h:1?shared_blob_dir=1",
                "shared_blob_dir=true needs blob_dir",
            ),
            (
                "zeo://h:1?blob_cache_size=1mb",
                "blob_cache_size needs blob_dir",
            ),
            (
                "zeo://h:1?blob_dir=/b&shared_blob_dir=true&blob_cache_size=1mb",
                "blob_cache_size limits a private blob cache",
            ),
            (
                "zeo://h:1?blob_dir=/b&blob_cache_size=lots",
                "blob_cache_size=lots: not a size",
            ),
            (
                "zeo://h:1?blob_dir=/b&blob_cache_size=-1mb",
                "blob_cache_size=-1mb: not a size",
            ),
            (
                "zeo://h:1?blob_dir=/b&blob_cache_size_check=100",
                "blob_cache_size_check=100: a percentage",
            ),
            (
                "zeo://h:1?blob_dir=/b&blob_cache_size_check=-5",
                "blob_cache_size_check=-5: a percentage",
            ),
            (
                "zeo://h:1?blob_dir=/b&blob_cache_size_check=ten",
                "blob_cache_size_check=ten: not an integer",
            ),
            (
                "zeo://h:1?blob_dir=/b&shared_blob_dir=maybe",
                "shared_blob_dir=maybe: not a boolean",
            ),
            ("zeo://h:1?read_only=1&read_only=0", "given twice"),
            ("zeo://h:1?name=%zz", "'%' not followed"),
            ("zeo://u@h:1", "user names"),
            ("file://", "without a path"),
            ("file:///x.fs?create=true", "create=true"),
            ("file:///x.fs?quota=1", "quota: not supported"),
            ("file:///x.fs?x=1", "unknown key \"x\" for file://"),
        ] {
            let e = error(url);
            assert!(e.contains(part), "{url:?}: {e}");
            assert!(e.starts_with(&format!("storage URL {url:?}")), "{e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in [
            "zeo://127.0.0.1:8100",
            "zeo://[::1]:8100?storage=main&read_only=true",
            "zeo:///run/zeo.sock",
            "file:///a/Data.fs?read_only=true",
        ] {
            assert_eq!(parse(url).unwrap().to_string(), url);
        }
    }

    #[test]
    fn file_only_tools_refuse_zeo() {
        assert_eq!(file_only("a.fs", "fsdump").unwrap(), PathBuf::from("a.fs"));
        let e = file_only("zeo://h:1", "fsdump").unwrap_err().to_string();
        assert!(e.contains("fsdump reads the Data.fs format itself"), "{e}");
    }
}
