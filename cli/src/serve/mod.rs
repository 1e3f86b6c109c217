//! `zodbrs serve`: a ZEO server with `runzeo`'s command line and
//! configuration file, serving FileStorages (and in-memory storages for
//! `<mappingstorage>`/`<demostorage>`) to unmodified Python clients.
//!
//! This module is the wiring: options and configuration
//! ([`config`]), opening the storages and describing them to the server
//! ([`zeo_proto::server::StorageSpec`]), logging, signals and the PID file.
//! The protocol and its semantics live in `zeo_proto::server`.
//!
//! SIGTERM or SIGINT: stop accepting, abort transactions not yet finishing,
//! let a `tpc_finish` under way complete, make every commit durable, write
//! each FileStorage's `.index` (by closing it), remove the PID file, exit 0.

pub mod bench;
pub mod config;
pub mod log;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use filestorage::{Durability, FileStorage, OpenOptions};
use zeo_proto::encoding::Encoding;
use zeo_proto::server::{Server, ServerConfig, StorageSpec, interfaces};
use zodb_core::memory::MemoryStorage;
use zodb_core::{Oid, Tid};

use config::{Address, Config, StorageConf};

/// `runzeo`'s options, as `zodbrs serve` takes them.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `-a/--address`: overrides `<zeo> address`.
    pub address: Option<String>,
    /// `-f/--filename`: FileStorages named "1", "2", …, instead of the
    /// configuration's storages.
    pub filenames: Vec<PathBuf>,
    /// `-r/--read-only`.
    pub read_only: bool,
    /// `-t/--timeout`: transaction timeout in seconds.
    pub timeout: Option<f64>,
    /// `-C/--configure`.
    pub configure: Option<PathBuf>,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// Fsync at every commit instead of sharing fsyncs between commits
    /// finishing together.
    pub no_group_commit: bool,
}

/// Why `serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad options or configuration.
    #[error("{0}")]
    Usage(String),
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A storage could not be opened.
    #[error("storage {name:?}: {source}")]
    Storage {
        /// The storage's name.
        name: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server.
    #[error(transparent)]
    Server(#[from] zeo_proto::server::ServeError),
    /// I/O (binding, the PID file).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// The effective configuration: file, then command line on top.
pub fn effective_config(opts: &ServeOptions) -> Result<Config, ServeError> {
    let mut cfg = match &opts.configure {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(io_err(format!("reading {}", path.display())))?;
            config::parse(&text, path)?
        }
        None => Config {
            zeo: config::ZeoSection::default(),
            storages: Vec::new(),
            eventlog: None,
        },
    };
    if let Some(a) = &opts.address {
        cfg.zeo.address = Some(Address::parse(a).map_err(ServeError::Usage)?);
    }
    if !opts.filenames.is_empty() {
        cfg.storages = opts
            .filenames
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    (i + 1).to_string(),
                    StorageConf::File {
                        path: p.clone(),
                        create: false,
                        read_only: false,
                        pack_gc: true,
                        blob_dir: None,
                    },
                )
            })
            .collect();
    }
    if opts.read_only {
        cfg.zeo.read_only = true;
    }
    if let Some(t) = opts.timeout {
        cfg.zeo.transaction_timeout = Some(
            Duration::try_from_secs_f64(t)
                .map_err(|_| ServeError::Usage(format!("invalid --timeout {t}")))?,
        );
    }
    if let Some(p) = &opts.pid_file {
        cfg.zeo.pid_filename = Some(p.clone());
    }
    if cfg.zeo.address.is_none() {
        return Err(ServeError::Usage(
            "no address given: use -a HOST:PORT|PORT|PATH or <zeo> address".into(),
        ));
    }
    if cfg.storages.is_empty() {
        return Err(ServeError::Usage(
            "no storages specified; use -f or -C".into(),
        ));
    }
    Ok(cfg)
}

/// What keeps an opened storage alive and is done at shutdown.
enum Opened {
    File(Arc<FileStorage>),
    Memory,
}

/// Opens one configured storage and describes it for the server.
fn open_storage(
    name: &str,
    conf: &StorageConf,
    group_commit: bool,
    blob_dir: Option<&Path>,
    opened: &mut Vec<Opened>,
) -> Result<StorageSpec, ServeError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ServeError::Storage {
        name: name.to_owned(),
        source,
    };
    Ok(match conf {
        StorageConf::File {
            path,
            create,
            read_only,
            pack_gc,
            blob_dir: own_blobs,
        } => {
            let deferred = group_commit && !read_only;
            let opts = OpenOptions {
                read_only: *read_only,
                create: *create,
                durability: if deferred {
                    Durability::Deferred
                } else {
                    Durability::Immediate
                },
                ..OpenOptions::read_write()
            };
            let fs = Arc::new(FileStorage::open(path, &opts).map_err(|e| fail(Box::new(e)))?);
            let blobs = own_blobs.as_deref().or(blob_dir);
            let mut spec = StorageSpec::new(
                fs.clone(),
                if blobs.is_some() {
                    interfaces::FILESTORAGE_BLOBS
                } else {
                    interfaces::FILESTORAGE
                },
            );
            spec.read_only = *read_only;
            spec.pack_gc = *pack_gc;
            spec.blob_dir = blobs.map(Path::to_owned);
            let f = fs.clone();
            spec.size = Some(Arc::new(move || f.end_pos()));
            let f = fs.clone();
            spec.record_cursor = Some(Arc::new(move |from: Option<Oid>| {
                let from = from.unwrap_or(Oid(0));
                f.with_index(|ix| {
                    let mut it = ix.iter().map(|(o, _)| o).skip_while(|o| *o < from);
                    let first = it.next()?;
                    Some((first, it.next()))
                })
            }));
            let f = fs.clone();
            spec.last_invalidations = Some(Arc::new(move |n| last_invalidations(&f, n)));
            if deferred {
                let f = fs.clone();
                spec.group_sync = Some(Arc::new(move || {
                    f.sync_finished().map_err(std::io::Error::other)
                }));
            }
            opened.push(Opened::File(fs));
            spec
        }
        StorageConf::Mapping { name: display } => {
            let mem = Arc::new(MemoryStorage::new(display.clone()));
            memory_spec(mem, blob_dir, opened)
        }
        StorageConf::Demo {
            name: display,
            base,
        } => {
            let base_name = match base.as_deref() {
                None => None,
                Some(StorageConf::File { path, .. }) => {
                    // The changes live in memory; a base with data would
                    // have to be read through, which this server does not
                    // do. An absent or empty base is the same as none.
                    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    if len > 4 {
                        return Err(fail(
                            format!(
                                "a <demostorage> over a non-empty base ({}) is not supported",
                                path.display()
                            )
                            .into(),
                        ));
                    }
                    Some(path.display().to_string())
                }
                Some(StorageConf::Mapping { name }) => Some(name.clone()),
                Some(_) => {
                    return Err(fail(
                        "a <demostorage> base must be a <filestorage> or <mappingstorage>".into(),
                    ));
                }
            };
            let display = display.clone().unwrap_or_else(|| match base_name {
                Some(b) => format!("DemoStorage({b:?}, 'MappingStorage')").replace('"', "'"),
                None => "DemoStorage".to_owned(),
            });
            let mem = Arc::new(MemoryStorage::new(display));
            memory_spec(mem, blob_dir, opened)
        }
        StorageConf::Blob {
            blob_dir: dir,
            base,
        } => open_storage(name, base, group_commit, Some(dir), opened)?,
    })
}

fn memory_spec(
    mem: Arc<MemoryStorage>,
    blob_dir: Option<&Path>,
    opened: &mut Vec<Opened>,
) -> StorageSpec {
    let mut spec = StorageSpec::new(mem.clone(), interfaces::MEMORY_UNDO);
    if let Some(dir) = blob_dir {
        spec.interfaces
            .insert(0, ("ZODB.interfaces".into(), "IBlobStorage".into()));
        spec.blob_dir = Some(dir.to_owned());
    }
    let m = mem.clone();
    spec.size = Some(Arc::new(move || m.size()));
    opened.push(Opened::Memory);
    spec
}

/// ZODB's `FileStorage.lastInvalidations(n)`: the last `n` transactions,
/// oldest first, with the oids they wrote.
fn last_invalidations(fs: &FileStorage, n: usize) -> Vec<(Tid, Vec<Oid>)> {
    let mut out = Vec::new();
    for t in fs.txns_rev().take(n) {
        let Ok(t) = t else { break };
        let mut oids = Vec::new();
        for r in fs.data_records(&t) {
            match r {
                Ok(r) => oids.push(r.header.oid),
                Err(_) => break,
            }
        }
        out.push((t.tid(), oids));
    }
    out.reverse();
    out
}

/// Sets up logging: `<eventlog>` level and file if configured, else
/// stderr; `ZODBRS_LOG` (an `EnvFilter` directive) overrides the level.
pub fn init_logging(cfg: &Config) -> Result<(), ServeError> {
    use tracing_subscriber::EnvFilter;
    let level = cfg
        .eventlog
        .as_ref()
        .and_then(|e| e.level.as_deref())
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "CRITICAL" | "FATAL" | "ERROR" => "error",
            "WARN" | "WARNING" => "warn",
            "DEBUG" => "debug",
            "TRACE" | "BLATHER" => "trace",
            _ => "info",
        })
        .unwrap_or("info");
    let filter = EnvFilter::try_from_env("ZODBRS_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let path = cfg
        .eventlog
        .as_ref()
        .and_then(|e| e.path.clone())
        .filter(|p| p.as_os_str() != "STDERR");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let r = match path {
        Some(p) if p.as_os_str() == "STDOUT" => builder.with_writer(std::io::stdout).try_init(),
        Some(p) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(io_err(format!("opening log file {}", p.display())))?;
            builder
                .with_ansi(false)
                .event_format(log::ZeoLogFormat)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    // Already initialised (tests calling twice): keep the first.
    let _ = r;
    Ok(())
}

/// Runs the server until SIGTERM/SIGINT; see the [module docs](self).
pub fn serve(opts: &ServeOptions) -> Result<(), ServeError> {
    let cfg = effective_config(opts)?;
    init_logging(&cfg)?;
    let msgpack = cfg
        .zeo
        .msgpack
        .unwrap_or_else(|| std::env::var_os("ZEO_MSGPACK").is_some_and(|v| !v.is_empty()));
    let server_config = ServerConfig {
        read_only: cfg.zeo.read_only,
        invalidation_queue_size: cfg.zeo.invalidation_queue_size.unwrap_or(100),
        invalidation_age: cfg.zeo.invalidation_age,
        transaction_timeout: cfg.zeo.transaction_timeout,
        client_conflict_resolution: cfg.zeo.client_conflict_resolution,
        encoding: if msgpack {
            Encoding::Msgpack
        } else {
            Encoding::Pickle
        },
        ..ServerConfig::default()
    };
    let mut opened = Vec::new();
    let mut specs = Vec::new();
    for (name, conf) in &cfg.storages {
        let spec = open_storage(name, conf, !opts.no_group_commit, None, &mut opened)?;
        tracing::info!(storage = %name, name = %spec.storage.name(), read_only = spec.read_only, group_commit = spec.group_sync.is_some(), "opened storage");
        specs.push((name.clone(), spec));
    }
    let server = Server::new(server_config, specs)?;
    let pid_file = cfg.zeo.pid_filename.clone();
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(io_err(format!("writing PID file {}", p.display())))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("zeo")
        .build()
        .map_err(io_err("starting the runtime"))?;
    let address = cfg
        .zeo
        .address
        .clone()
        .ok_or_else(|| ServeError::Usage("no address".into()))?;
    let result = runtime.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (mut term, mut int) = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(t), Ok(i)) => (t, i),
                _ => return std::future::pending().await,
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("terminated by SIGTERM"),
                _ = int.recv() => tracing::info!("terminated by SIGINT"),
            }
        };
        match &address {
            Address::Tcp { host, port } => {
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                let listener = tokio::net::TcpListener::bind((host, *port))
                    .await
                    .map_err(io_err(format!("binding {host}:{port}")))?;
                let local = listener
                    .local_addr()
                    .map_err(io_err("reading the bound address"))?;
                tracing::info!(address = %local, "listening");
                server.serve(listener, shutdown).await?;
            }
            Address::Unix(path) => {
                remove_stale_socket(path);
                let listener = tokio::net::UnixListener::bind(path)
                    .map_err(io_err(format!("binding {}", path.display())))?;
                tracing::info!(address = %path.display(), "listening");
                server.serve(listener, shutdown).await?;
                let _ = std::fs::remove_file(path);
            }
        }
        Ok::<(), ServeError>(())
    });
    drop(server);
    runtime.shutdown_timeout(Duration::from_secs(60));
    for o in opened {
        if let Opened::File(fs) = o
            && !fs.is_read_only()
        {
            if let Err(e) = fs.sync_finished() {
                tracing::error!(path = %fs.path().display(), error = %e, "final fsync failed");
            }
            match fs.save_index() {
                Ok(()) => tracing::info!(path = %fs.path().display(), "index saved"),
                Err(e) => {
                    tracing::error!(path = %fs.path().display(), error = %e, "saving the index failed")
                }
            }
        }
    }
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// asyncio's `create_unix_server` replaces a leftover socket file.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}
