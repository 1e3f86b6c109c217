//! The subset of ZConfig that `runzeo -C` configurations use (ZEO:
//! `server.xml`, ZODB: `component.xml`), parsed strictly: a key or a
//! section this server does not understand is an error naming the file and
//! line, never silently ignored — a typo in `read-only` must not turn into
//! a writable server.
//!
//! Syntax (ZConfig's): one key per line (`key value`), `<type name>` …
//! `</type>` sections and empty `<type name/>` ones, `#` comments,
//! `%define NAME VALUE` with `$NAME`/`${NAME}` substitution (`$$` is a
//! dollar). Keys and section types are case-insensitive.
//!
//! Understood:
//! - `<zeo>`: `address`, `read-only`, `invalidation-queue-size`,
//!   `invalidation-age`, `transaction-timeout`, `pid-filename`,
//!   `client-conflict-resolution`, `msgpack`;
//! - `<filestorage NAME>`: `path`, `create`, `read-only`, `pack-gc`,
//!   `blob-dir`, `pack-keep-old true`;
//! - `<blobstorage NAME>`: `blob-dir` and one storage section inside;
//! - `<mappingstorage NAME>`: `name`;
//! - `<demostorage NAME>`: `name` and at most one (empty) base storage;
//! - `<eventlog>`: `level`, and `<logfile>` with `path`, `level`, `format`.
//!
//! Not understood (an error): `<ssl>` (TLS), `%import`, `%include`,
//! other storage types, `quota`, `packer`.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when the error concerns the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// One `key value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyLine {
    key: String,
    value: String,
    line: usize,
}

/// A section and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    kind: String,
    name: Option<String>,
    line: usize,
    keys: Vec<KeyLine>,
    children: Vec<Section>,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port` (an empty host: every interface).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (0: any free one).
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Address {
    /// ZConfig's `socket-binding-address`: a path if it contains a `/`,
    /// else `host:port` or just `port`.
    pub fn parse(s: &str) -> Result<Address, String> {
        let s = s.trim();
        if s.contains('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
            None => ("", s),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid address {s:?}: expected HOST:PORT, PORT or a path"))?;
        Ok(Address::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The `<zeo>` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZeoSection {
    /// `address`.
    pub address: Option<Address>,
    /// `read-only`.
    pub read_only: bool,
    /// `invalidation-queue-size`.
    pub invalidation_queue_size: Option<usize>,
    /// `invalidation-age` (seconds).
    pub invalidation_age: Option<Duration>,
    /// `transaction-timeout` (seconds).
    pub transaction_timeout: Option<Duration>,
    /// `pid-filename`.
    pub pid_filename: Option<PathBuf>,
    /// `client-conflict-resolution`.
    pub client_conflict_resolution: bool,
    /// `msgpack` (None: not given, the `ZEO_MSGPACK` environment decides).
    pub msgpack: Option<bool>,
}

/// A storage section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConf {
    /// `<filestorage>`.
    File {
        /// `path`.
        path: PathBuf,
        /// `create`: start empty even if the file exists.
        create: bool,
        /// `read-only`.
        read_only: bool,
        /// `pack-gc` (default true).
        pack_gc: bool,
        /// `blob-dir`.
        blob_dir: Option<PathBuf>,
    },
    /// `<mappingstorage>`.
    Mapping {
        /// `name` (default `Mapping Storage`).
        name: String,
    },
    /// `<demostorage>`: changes in memory over an optional base.
    Demo {
        /// `name`.
        name: Option<String>,
        /// The base storage section, if any.
        base: Option<Box<StorageConf>>,
    },
    /// `<blobstorage>`: blobs for the storage inside.
    Blob {
        /// `blob-dir`.
        blob_dir: PathBuf,
        /// The storage.
        base: Box<StorageConf>,
    },
}

/// `<eventlog>`: where logs go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    /// `level` (of the eventlog, or of its logfile).
    pub level: Option<String>,
    /// `<logfile> path` (`STDERR`/`STDOUT` are the streams).
    pub path: Option<PathBuf>,
}

/// A parsed configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `<zeo>`.
    pub zeo: ZeoSection,
    /// The storages, by the name clients register with.
    pub storages: Vec<(String, StorageConf)>,
    /// `<eventlog>`.
    pub eventlog: Option<EventLog>,
}

fn err(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line,
        message: message.into(),
    }
}

/// `$NAME`, `${NAME}` and `$$`, as ZConfig substitutes them.
fn substitute(
    s: &str,
    defs: &HashMap<String, String>,
    file: &Path,
    line: usize,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
                continue;
            }
            Some('{') => {
                chars.next();
                let mut n = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => n.push(c),
                        None => return Err(err(file, line, "unterminated ${...}")),
                    }
                }
                n
            }
            _ => {
                let mut n = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        n.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                n
            }
        };
        let value = defs
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| err(file, line, format!("undefined name ${name}")))?;
        out.push_str(value);
    }
    Ok(out)
}

/// Parses the syntax into a tree of sections (the root has kind "").
fn parse_tree(text: &str, file: &Path) -> Result<Section, ConfigError> {
    let mut stack = vec![Section {
        kind: String::new(),
        name: None,
        line: 0,
        keys: Vec::new(),
        children: Vec::new(),
    }];
    let mut defs: HashMap<String, String> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(directive) = t.strip_prefix('%') {
            let mut parts = directive.splitn(2, char::is_whitespace);
            let word = parts.next().unwrap_or_default().to_ascii_lowercase();
            let rest = parts.next().unwrap_or_default().trim();
            match word.as_str() {
                "define" => {
                    let mut p = rest.splitn(2, char::is_whitespace);
                    let name = p.next().unwrap_or_default();
                    if name.is_empty() {
                        return Err(err(file, line, "%define needs a name"));
                    }
                    let value = substitute(p.next().unwrap_or_default().trim(), &defs, file, line)?;
                    defs.insert(name.to_ascii_lowercase(), value);
                }
                other => {
                    return Err(err(
                        file,
                        line,
                        format!("%{other} is not supported by this server"),
                    ));
                }
            }
            continue;
        }
        if let Some(inner) = t.strip_prefix('<') {
            let Some(inner) = inner.strip_suffix('>') else {
                return Err(err(file, line, format!("malformed section line {t:?}")));
            };
            if let Some(kind) = inner.strip_prefix('/') {
                let kind = kind.trim().to_ascii_lowercase();
                let Some(done) = stack.pop() else {
                    return Err(err(file, line, "unbalanced section end"));
                };
                if done.kind != kind || stack.is_empty() {
                    return Err(err(
                        file,
                        line,
                        format!(
                            "</{kind}> does not close <{}> (line {})",
                            done.kind, done.line
                        ),
                    ));
                }
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(done);
                }
                continue;
            }
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(s) => (s, true),
                None => (inner, false),
            };
            let inner = substitute(inner.trim(), &defs, file, line)?;
            let mut parts = inner.splitn(2, char::is_whitespace);
            let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
            if kind.is_empty() {
                return Err(err(file, line, "section without a type"));
            }
            let name = parts
                .next()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned);
            let section = Section {
                kind,
                name,
                line,
                keys: Vec::new(),
                children: Vec::new(),
            };
            if empty {
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(section);
                }
            } else {
                stack.push(section);
            }
            continue;
        }
        let mut parts = t.splitn(2, char::is_whitespace);
        let key = parts.next().unwrap_or_default().to_ascii_lowercase();
        let value = substitute(parts.next().unwrap_or_default().trim(), &defs, file, line)?;
        if let Some(s) = stack.last_mut() {
            s.keys.push(KeyLine { key, value, line });
        }
    }
    if stack.len() != 1 {
        let open = stack.last().map_or(0, |s| s.line);
        return Err(err(file, open, "section is never closed"));
    }
    stack
        .pop()
        .ok_or_else(|| err(file, 0, "empty configuration"))
}

fn boolean(k: &KeyLine, file: &Path) -> Result<bool, ConfigError> {
    match k.value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(err(
            file,
            k.line,
            format!(
                "{}: {other:?} is not a boolean (true/false, yes/no, on/off)",
                k.key
            ),
        )),
    }
}

fn number<T: std::str::FromStr>(k: &KeyLine, file: &Path, what: &str) -> Result<T, ConfigError> {
    k.value.parse().map_err(|_| {
        err(
            file,
            k.line,
            format!("{}: {:?} is not {what}", k.key, k.value),
        )
    })
}

fn seconds(k: &KeyLine, file: &Path) -> Result<Duration, ConfigError> {
    let s: f64 = number(k, file, "a number of seconds")?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| err(file, k.line, format!("{}: {s} is not a duration", k.key)))
}

fn unknown_key(s: &Section, k: &KeyLine, file: &Path) -> ConfigError {
    err(
        file,
        k.line,
        format!("unknown key {:?} in <{}>", k.key, s.kind),
    )
}

fn no_children(s: &Section, file: &Path) -> Result<(), ConfigError> {
    match s.children.first() {
        Some(c) => Err(err(
            file,
            c.line,
            format!("<{}> is not allowed inside <{}>", c.kind, s.kind),
        )),
        None => Ok(()),
    }
}

fn zeo_section(s: &Section, file: &Path) -> Result<ZeoSection, ConfigError> {
    if let Some(c) = s.children.first() {
        let why = if c.kind == "ssl" {
            "TLS (<ssl>) is not supported by this server".to_owned()
        } else {
            format!("<{}> is not allowed inside <zeo>", c.kind)
        };
        return Err(err(file, c.line, why));
    }
    let mut z = ZeoSection::default();
    for k in &s.keys {
        match k.key.as_str() {
            "address" => {
                z.address = Some(Address::parse(&k.value).map_err(|m| err(file, k.line, m))?)
            }
            "read-only" => z.read_only = boolean(k, file)?,
            "invalidation-queue-size" => {
                z.invalidation_queue_size = Some(number(k, file, "an integer")?)
            }
            "invalidation-age" => z.invalidation_age = Some(seconds(k, file)?),
            "transaction-timeout" => z.transaction_timeout = Some(seconds(k, file)?),
            "pid-filename" => z.pid_filename = Some(PathBuf::from(&k.value)),
            "client-conflict-resolution" => z.client_conflict_resolution = boolean(k, file)?,
            "msgpack" => z.msgpack = Some(boolean(k, file)?),
            _ => return Err(unknown_key(s, k, file)),
        }
    }
    Ok(z)
}

const STORAGE_KINDS: &[&str] = &[
    "filestorage",
    "mappingstorage",
    "demostorage",
    "blobstorage",
];

fn storage_section(s: &Section, file: &Path) -> Result<StorageConf, ConfigError> {
    match s.kind.as_str() {
        "filestorage" => {
            no_children(s, file)?;
            let mut path = None;
            let (mut create, mut read_only, mut pack_gc, mut blob_dir) = (false, false, true, None);
            for k in &s.keys {
                match k.key.as_str() {
                    "path" => path = Some(PathBuf::from(&k.value)),
                    "create" => create = boolean(k, file)?,
                    "read-only" => read_only = boolean(k, file)?,
                    "pack-gc" => pack_gc = boolean(k, file)?,
                    "blob-dir" => blob_dir = Some(PathBuf::from(&k.value)),
                    "pack-keep-old" => {
                        if !boolean(k, file)? {
                            return Err(err(
                                file,
                                k.line,
                                "pack-keep-old false is not supported (pack keeps Data.fs.old)",
                            ));
                        }
                    }
                    "quota" | "packer" => {
                        return Err(err(
                            file,
                            k.line,
                            format!("{} is not supported by this server", k.key),
                        ));
                    }
                    _ => return Err(unknown_key(s, k, file)),
                }
            }
            let path = path.ok_or_else(|| err(file, s.line, "<filestorage> needs a path"))?;
            Ok(StorageConf::File {
                path,
                create,
                read_only,
                pack_gc,
                blob_dir,
            })
        }
        "mappingstorage" => {
            no_children(s, file)?;
            let mut name = "Mapping Storage".to_owned();
            for k in &s.keys {
                match k.key.as_str() {
                    "name" => name = k.value.clone(),
                    _ => return Err(unknown_key(s, k, file)),
                }
            }
            Ok(StorageConf::Mapping { name })
        }
        "demostorage" => {
            let mut name = None;
            for k in &s.keys {
                match k.key.as_str() {
                    "name" => name = Some(k.value.clone()),
                    _ => return Err(unknown_key(s, k, file)),
                }
            }
            let mut base = None;
            for c in &s.children {
                if c.name.as_deref() == Some("changes") {
                    // The changes storage is ours: memory.
                    if c.kind != "mappingstorage" {
                        return Err(err(
                            file,
                            c.line,
                            "a <demostorage> changes storage other than <mappingstorage> is not supported",
                        ));
                    }
                    continue;
                }
                if base.is_some() {
                    return Err(err(file, c.line, "<demostorage> takes one base storage"));
                }
                base = Some(Box::new(storage_section(c, file)?));
            }
            Ok(StorageConf::Demo { name, base })
        }
        "blobstorage" => {
            let mut blob_dir = None;
            for k in &s.keys {
                match k.key.as_str() {
                    "blob-dir" => blob_dir = Some(PathBuf::from(&k.value)),
                    _ => return Err(unknown_key(s, k, file)),
                }
            }
            let blob_dir =
                blob_dir.ok_or_else(|| err(file, s.line, "<blobstorage> needs a blob-dir"))?;
            let [inner] = s.children.as_slice() else {
                return Err(err(
                    file,
                    s.line,
                    "<blobstorage> needs exactly one storage section inside",
                ));
            };
            Ok(StorageConf::Blob {
                blob_dir,
                base: Box::new(storage_section(inner, file)?),
            })
        }
        other => Err(err(
            file,
            s.line,
            format!(
                "<{other}> is not a storage this server can serve ({})",
                STORAGE_KINDS.join(", ")
            ),
        )),
    }
}

fn eventlog_section(s: &Section, file: &Path) -> Result<EventLog, ConfigError> {
    let mut log = EventLog::default();
    for k in &s.keys {
        match k.key.as_str() {
            "level" => log.level = Some(k.value.clone()),
            _ => return Err(unknown_key(s, k, file)),
        }
    }
    for c in &s.children {
        if c.kind != "logfile" {
            return Err(err(
                file,
                c.line,
                format!(
                    "<{}> is not supported inside <eventlog> (only <logfile>)",
                    c.kind
                ),
            ));
        }
        no_children(c, file)?;
        for k in &c.keys {
            match k.key.as_str() {
                "path" => log.path = Some(PathBuf::from(&k.value)),
                "level" => log.level = Some(k.value.clone()),
                // The layout of our lines is our own.
                "format" => {}
                _ => return Err(unknown_key(c, k, file)),
            }
        }
    }
    Ok(log)
}

/// Parses a configuration.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let root = parse_tree(text, file)?;
    if let Some(k) = root.keys.first() {
        return Err(err(
            file,
            k.line,
            format!("key {:?} outside any section", k.key),
        ));
    }
    let mut zeo = None;
    let mut eventlog = None;
    let mut storages: Vec<(Option<String>, StorageConf, usize)> = Vec::new();
    for s in &root.children {
        match s.kind.as_str() {
            "zeo" => {
                if zeo.is_some() {
                    return Err(err(file, s.line, "more than one <zeo> section"));
                }
                zeo = Some(zeo_section(s, file)?);
            }
            "eventlog" => eventlog = Some(eventlog_section(s, file)?),
            _ => storages.push((s.name.clone(), storage_section(s, file)?, s.line)),
        }
    }
    // runzeo: at most one unnamed storage, which is "1".
    let unnamed: Vec<usize> = storages
        .iter()
        .filter(|(n, _, _)| n.is_none())
        .map(|(_, _, l)| *l)
        .collect();
    if let Some(&second) = unnamed.get(1) {
        return Err(err(file, second, "no more than one storage may be unnamed"));
    }
    if !unnamed.is_empty() && storages.iter().any(|(n, _, _)| n.as_deref() == Some("1")) {
        return Err(err(
            file,
            unnamed.first().copied().unwrap_or(0),
            "can't have an unnamed storage and a storage named 1",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut named = Vec::with_capacity(storages.len());
    for (name, conf, line) in storages {
        let name = name.unwrap_or_else(|| "1".to_owned());
        if !seen.insert(name.clone()) {
            return Err(err(
                file,
                line,
                format!("storage {name:?} is defined twice"),
            ));
        }
        named.push((name, conf));
    }
    Ok(Config {
        zeo: zeo.unwrap_or_default(),
        storages: named,
        eventlog,
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("zeo.conf"))
    }

    #[test]
    fn what_zeo_test_forker_writes() {
        let c = p("<zeo>\naddress 127.0.0.1:8100\nread-only false\ninvalidation-queue-size 10\n\
                   transaction-timeout 5\nclient-conflict-resolution true\n</zeo>\n\n\
                   <filestorage 1>\npath Data.fs\ncreate false\nread-only true\n</filestorage>\n\
                   <eventlog>\n  level INFO\n  <logfile>\n     path server.log\n  </logfile>\n</eventlog>\n")
        .unwrap();
        assert_eq!(
            c.zeo.address,
            Some(Address::Tcp {
                host: "127.0.0.1".into(),
                port: 8100
            })
        );
        assert_eq!(c.zeo.invalidation_queue_size, Some(10));
        assert_eq!(c.zeo.transaction_timeout, Some(Duration::from_secs(5)));
        assert!(c.zeo.client_conflict_resolution);
        assert_eq!(
            c.storages,
            vec![(
                "1".to_owned(),
                StorageConf::File {
                    path: "Data.fs".into(),
                    create: false,
                    read_only: true,
                    pack_gc: true,
                    blob_dir: None
                }
            )]
        );
        assert_eq!(c.eventlog.unwrap().path, Some(PathBuf::from("server.log")));
    }

    #[test]
    fn nested_and_empty_sections() {
        let c = p("<zeo>\n address 8100\n</zeo>\n<blobstorage 1>\n  blob-dir blobs\n  <filestorage 2>\n    path Data.fs\n  </filestorage>\n</blobstorage>\n<mappingstorage 2/>\n<demostorage 3>\n <filestorage 1>\n path x.fs\n </filestorage>\n</demostorage>\n").unwrap();
        assert_eq!(c.storages.len(), 3);
        assert!(
            matches!(&c.storages[0].1, StorageConf::Blob { blob_dir, .. } if blob_dir == Path::new("blobs"))
        );
        assert_eq!(
            c.storages[1],
            (
                "2".to_owned(),
                StorageConf::Mapping {
                    name: "Mapping Storage".into()
                }
            )
        );
        assert!(matches!(
            &c.storages[2].1,
            StorageConf::Demo { base: Some(_), .. }
        ));
        assert_eq!(
            c.zeo.address,
            Some(Address::Tcp {
                host: String::new(),
                port: 8100
            })
        );
        let c = p(
            "<zeo>\naddress /tmp/zeo.sock\n</zeo>\n<filestorage>\npath $dir/Data.fs\n</filestorage>\n",
        );
        assert_eq!(c.unwrap_err().line, 5);
        let c = p("%define dir /var\n<zeo>\naddress ${dir}/zeo.sock\n</zeo>\n<filestorage>\npath $dir/Data.fs\n</filestorage>\n").unwrap();
        assert_eq!(c.zeo.address, Some(Address::Unix("/var/zeo.sock".into())));
        assert_eq!(c.storages[0].0, "1");
    }

    #[test]
    fn errors_name_the_line() {
        let e = p("<zeo>\naddress 1\nread_only true\n</zeo>\n").unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (3, "unknown key \"read_only\" in <zeo>")
        );
        assert_eq!(
            e.to_string(),
            "zeo.conf:3: unknown key \"read_only\" in <zeo>"
        );
        let e = p("<zeo>\naddress 1\n<ssl>\ncertificate x\n</ssl>\n</zeo>\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("TLS"));
        let e = p("<zeo>\nread-only maybe\n</zeo>\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = p("<filestorage>\n</filestorage>\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = p("<zeo>\naddress 1\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = p("<zeo>\n</filestorage>\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = p("<relstorage>\n</relstorage>\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = p("%import relstorage\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = p("<filestorage>\npath a\n</filestorage>\n<mappingstorage/>\n").unwrap_err();
        assert_eq!(e.line, 4);
        let e = p("address 1\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = p("<zeo>\naddress nope\n</zeo>\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
