//! `zodbrs`: one binary for migrating and operating ZODB databases. Its
//! subcommands follow the tools ZODB users know (`fsdump`, `fstail`,
//! `fstest`, `fsrefs`, `fsoids`, zodbtools' `dump`/`catobj`/`info`/`analyze`),
//! print what those print, and exit non-zero with a message naming the file
//! and offset when something is wrong.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use filestorage::{BackendKind, DataFile, FileStorage};
use zodb_core::pickle::DisFlavor;
use zodbrs::pyrepr::Flavor;
use zodbrs::storage_url::{self, Access, StorageUrl, open};
use zodbrs::tools;

#[derive(Parser)]
#[command(
    name = "zodbrs",
    version,
    about = "ZODB FileStorage and wendelin.core tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Dump transactions and data records (ZODB's fsdump; -v: the verbose Dumper).
    Fsdump {
        /// Every field of every record (fsdump.Dumper).
        #[arg(short, long)]
        verbose: bool,
        /// Print as Python 2's tools did (no b'' prefixes, no size= on transactions).
        #[arg(long)]
        py2: bool,
        /// The Data.fs (a path or file:// URL).
        path: String,
    },
    /// Show the last transactions, newest first (ZODB's fstail).
    Fstail {
        /// Number of transactions.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// Print as Python 2's fstail did.
        #[arg(long)]
        py2: bool,
        /// The Data.fs (a path or file:// URL).
        path: String,
    },
    /// Report references to missing, unloadable or undone objects (ZODB's fsrefs).
    Fsrefs {
        /// Explain objects that fail to load.
        #[arg(short, action = clap::ArgAction::Count)]
        v: u8,
        /// The Data.fs (a path or file:// URL).
        path: String,
    },
    /// Trace every appearance of oids in a Data.fs (ZODB's fsoids).
    Fsoids {
        /// A file with one oid per line, in addition to OIDS.
        #[arg(short = 'f')]
        file: Option<PathBuf>,
        /// The Data.fs (a path or file:// URL).
        path: String,
        /// Oids as Python ints: 17, 0x11, ...
        oids: Vec<String>,
    },
    /// Dump transactions and object data in zodbtools' format (`zodb dump`).
    Dump {
        /// Print only the SHA-1 of each object's data, not the data.
        #[arg(long)]
        hashonly: bool,
        /// `raw` (restorable) or `zpickledis` (pickles disassembled).
        #[arg(long, default_value = "raw", value_parser = ["raw", "zpickledis"])]
        pretty: String,
        /// Disassemble as Python 2's zodbtools did (byte strings without b'').
        #[arg(long)]
        py2: bool,
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
        /// `tidmin..tidmax`, both ends optional and inclusive (`zodb help tidrange`).
        tidrange: Option<String>,
    },
    /// Print objects' data as of a transaction (zodbtools' `zodb catobj`).
    Catobj {
        /// Print only the SHA-1 of each object's data.
        #[arg(long)]
        hashonly: bool,
        /// Print the data alone, without header (one object only).
        #[arg(long, conflicts_with = "hashonly")]
        raw: bool,
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
        /// OID (hex), OID@TID or TID:OID: the object as of TID (default: latest).
        #[arg(required = true)]
        xids: Vec<String>,
    },
    /// Print general information about a database (zodbtools' `zodb info`).
    Info {
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
        /// Parameters to print (name, size, head, last_tid); default: all, with names.
        params: Vec<String>,
    },
    /// Report space used per class (zodbtools' `zodb analyze`).
    Analyze {
        /// Print the per-class table as CSV.
        #[arg(short, long)]
        csv: bool,
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
        /// `tidmin..tidmax`, both ends optional and inclusive.
        tidrange: Option<String>,
    },
    /// Rebuild Data.fs.index by a full scan and write it; with --check,
    /// only compare the saved index with the file and report every mismatch.
    Reindex {
        /// Compare instead of rewriting.
        #[arg(long)]
        check: bool,
        /// The Data.fs (a path or file:// URL).
        path: String,
    },
    /// Pack: remove history before a time (and unreachable objects), as ZODB's pack.
    Pack {
        /// Pack to this many days before now.
        #[arg(long, conflicts_with = "time")]
        days: Option<f64>,
        /// Pack time: Unix seconds (1764000000.25), ISO 8601 UTC, or a 16-hex-digit tid.
        #[arg(long)]
        time: Option<String>,
        /// Keep every object current at the pack time, reachable or not.
        #[arg(long)]
        no_gc: bool,
        /// The database: a Data.fs (opened read-write: no other writer may
        /// hold it) or zeo://HOST:PORT (the server packs).
        path: String,
    },
    /// wendelin.core ZBigFiles (`cat`).
    Bigfile {
        #[command(subcommand)]
        what: BigfileCmd,
    },
    /// wendelin.core ZBigArrays (`info`, `export` to .npy, `import` from .npy).
    Array {
        #[command(subcommand)]
        what: ArrayCmd,
    },
    /// wendelin.core's demo_zbigarray.py on the pager: `gen` a signal bigger than the budget, `read` it back.
    Demo {
        #[command(subcommand)]
        what: DemoCmd,
    },
    /// wendelin.core block objects (`convert` between ZBlk0 and ZBlk1).
    Zblk {
        #[command(subcommand)]
        what: ZblkCmd,
    },
    /// Copy every transaction into a new FileStorage (ZODB's copyTransactionsFrom).
    Copy {
        /// Replace a DST file even if it already holds transactions; append
        /// to a DST server's storage that does.
        #[arg(long)]
        force: bool,
        /// DST's magic when DST is a file (default: SRC's, so the copy is
        /// byte-identical; FS30 for a ZEO source).
        #[arg(long, value_parser = ["FS21", "FS30"])]
        magic: Option<String>,
        /// The database to copy (opened read-only): PATH, file:// or zeo:// URL.
        src: String,
        /// The destination: a new Data.fs (PATH or file://), or an empty
        /// database served at zeo://.
        dst: String,
    },
    /// Restore transactions from a `zodbrs dump` on stdin (zodbtools' `zodb restore`).
    Restore {
        /// Magic of a Data.fs created here (FS21: a file Python 2 can open).
        #[arg(long, value_parser = ["FS21", "FS30"], default_value = "FS30")]
        magic: String,
        /// The database to append to (a Data.fs is created if missing):
        /// PATH, file:// or zeo:// URL.
        path: String,
    },
    /// Serve storages to ZEO clients (runzeo's options and configuration file).
    Serve {
        /// HOST:PORT, PORT or a Unix socket path (overrides <zeo> address).
        #[arg(short = 'a', long)]
        address: Option<String>,
        /// A FileStorage to serve (repeatable; named "1", "2", ...; replaces the
        /// configuration's storages).
        #[arg(short = 'f', long = "filename")]
        filename: Vec<PathBuf>,
        /// Serve read-only.
        #[arg(short = 'r', long)]
        read_only: bool,
        /// Transaction timeout in seconds.
        #[arg(short = 't', long)]
        timeout: Option<f64>,
        /// A runzeo configuration file (ZConfig: <zeo>, storages, <eventlog>).
        #[arg(short = 'C', long = "configure")]
        configure: Option<PathBuf>,
        /// Write the process id to this file.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Fsync every commit on its own instead of sharing fsyncs between
        /// commits that finish together.
        #[arg(long)]
        no_group_commit: bool,
    },
    /// Measure against the Python reference in the same run and print the ratios.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Check the file's consistency (ZODB's fstest); -v lists transactions, -vv records.
    Fstest {
        /// Verbosity (repeat for more).
        #[arg(short, action = clap::ArgAction::Count)]
        v: u8,
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
    },
}

#[derive(Subcommand)]
enum BigfileCmd {
    /// Write a ZBigFile's bytes to stdout, holes as zeros ((maxKey+1)*blksize bytes).
    Cat {
        /// Read as of this transaction (16 hex digits or a time; default: latest).
        #[arg(long)]
        at: Option<String>,
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
        /// The ZBigFile: 16 hex digits, or a Python int (17, 0x11).
        oid: String,
    },
}

#[derive(Subcommand)]
enum ArrayCmd {
    /// Shape, dtype, order, block size and how the blocks are stored.
    Info {
        /// Read as of this transaction (16 hex digits or a time; default: latest).
        #[arg(long)]
        at: Option<String>,
        /// The database: PATH, file:// or zeo:// URL.
        path: String,
        /// The ZBigArray: 16 hex digits, or a Python int (17, 0x11).
        oid: String,
    },
    /// Write the array as a NumPy .npy file (`-`: stdout) that numpy.load reads equal to A[:].
    Export {
        /// Read as of this transaction (16 hex digits or a time; default: latest).
        #[arg(long)]
        at: Option<String>,
        /// The Data.fs (a path or file:// URL).
        path: String,
        /// The ZBigArray: 16 hex digits, or a Python int (17, 0x11).
        oid: String,
        /// The .npy file to write.
        out: PathBuf,
    },
    /// Store a NumPy .npy file as a new ZBigArray under root[KEY], streamed in bounded transactions.
    Import {
        /// The root key for the array (must not exist yet).
        #[arg(long)]
        key: String,
        /// Block size of the array's ZBigFile.
        #[arg(long, default_value_t = zblk::write::DEFAULT_BLKSIZE)]
        blksize: u64,
        /// Block format: ZBlk0, ZBlk1 or auto (wendelin.core's heuristic).
        #[arg(long, default_value = "ZBlk0", value_parser = ["ZBlk0", "ZBlk1", "auto"])]
        format: String,
        /// Commit every this many MiB of blocks (memory stays near twice this).
        #[arg(long, default_value_t = 64)]
        txn_mib: u64,
        /// The .npy file to read.
        npy: PathBuf,
        /// The database (a Data.fs is created if missing): PATH, file:// or zeo:// URL.
        path: String,
    },
}

#[derive(Subcommand)]
enum DemoCmd {
    /// Store root['signalv'] = 15·sin(0.2·t) as a float64 ZBigArray, in transactions of ≤ 32 MiB.
    Gen {
        /// Size of the signal in MiB.
        #[arg(long, default_value_t = 2048)]
        worksize: u64,
        /// The pager's memory budget in MiB.
        #[arg(long, default_value_t = 512)]
        budget: u64,
        /// The database: a path or storage URL (a missing file is created).
        path: String,
    },
    /// Mean and sum of root['signalv'] through one view, with the read throughput.
    Read {
        /// The pager's memory budget in MiB.
        #[arg(long, default_value_t = 512)]
        budget: u64,
        /// The database: a path or storage URL.
        path: String,
    },
}

#[derive(Subcommand)]
enum ZblkCmd {
    /// Rewrite a ZBigFile's blocks (or a ZBigArray's) in another block format, content unchanged.
    Convert {
        /// The target format.
        #[arg(long, value_parser = ["ZBlk0", "ZBlk1"])]
        to: String,
        /// Commit every this many MiB of converted blocks.
        #[arg(long, default_value_t = 64)]
        txn_mib: u64,
        /// The database (opened read-write): PATH, file:// or zeo:// URL.
        path: String,
        /// The ZBigFile or ZBigArray: 16 hex digits, or a Python int (17, 0x11).
        oid: String,
    },
}

/// A `--at` argument.
fn at_arg(at: Option<&str>) -> anyhow::Result<Option<zodb_core::Tid>> {
    Ok(at.map(zodbrs::tidrange::parse_tid_local).transpose()?)
}

#[derive(Subcommand)]
enum BenchCmd {
    /// A ZEO server (ours or runzeo): random loads, or 1-object commits with --write.
    Zeo {
        /// The server: HOST:PORT, PORT or a Unix socket path.
        #[arg(short = 'a', long)]
        address: String,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Commit 1-object transactions instead of loading.
        #[arg(long)]
        write: bool,
        /// Storage name.
        #[arg(long, default_value = "1")]
        storage: String,
        /// Load oids below this (default: the storage's object count).
        #[arg(long)]
        oids: Option<u64>,
    },
    /// This machine's loopback ceiling for `bench zeo`: the same connections
    /// and message sizes against a server that only echoes.
    Loopback {
        /// Concurrent connections.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// A ZBigArray through the pager (commit, first touch, re-read, first write), against wendelin's paths in Python.
    Pager {
        /// Python with ZODB and numpy, to measure the reference (e.g. .venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Size of the array in MiB.
        #[arg(long, default_value_t = 4096)]
        mib: u64,
        /// Scratch directory for the databases.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Our ZEO client against Python's ClientStorage on one running server:
    /// loadBefore latency and pipelined loads/s, caches off.
    ZeoClient {
        /// The server: zeo://HOST:PORT[?storage=NAME] or zeo:///SOCKET.
        url: String,
        /// Python with ZEO (e.g. .venv/bin/python), to measure ClientStorage too.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Sequential loads for the latency figure.
        #[arg(long, default_value_t = 20_000)]
        loads: usize,
        /// Seconds of pipelined loading, each side.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Our loads in flight at once.
        #[arg(long, default_value_t = 128)]
        window: usize,
        /// Python threads sharing its ClientStorage.
        #[arg(long, default_value_t = 16)]
        py_threads: usize,
        /// Load oids below this (default: the storage's object count).
        #[arg(long)]
        oids: Option<u64>,
    },
    /// A whole wendelin.core ZBigArray into memory, against wendelin's path in Python.
    Array {
        /// Python with ZODB and numpy, to measure the reference (e.g. .venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Runs per side (the best one counts).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A Data.fs with a big array (bench/gen_array_db.py makes one).
        path: PathBuf,
        /// The ZBigArray: 16 hex digits, or a Python int.
        oid: String,
    },
    /// Writing a wendelin.core ZBigArray (and `array import`), against wendelin's path in Python.
    ArrayWrite {
        /// Python with ZODB and numpy, to measure the reference (e.g. .venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Size of the array in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Block size.
        #[arg(long, default_value_t = zblk::write::DEFAULT_BLKSIZE)]
        blksize: u64,
        /// Block format: ZBlk0, ZBlk1 or auto.
        #[arg(long, default_value = "ZBlk0", value_parser = ["ZBlk0", "ZBlk1", "auto"])]
        format: String,
        /// Directory for the scratch .npy and databases (on the filesystem to measure).
        dir: PathBuf,
    },
    /// The FileStorage read side: random loads, open without index, fsdump.
    Fs {
        /// Python with ZODB installed, to measure the reference (e.g. .venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Number of random loads (Python does a tenth).
        #[arg(long, default_value_t = 2_000_000)]
        loads: usize,
        /// A large Data.fs (bench/gen_bench_db.py makes one).
        path: PathBuf,
    },
    /// `copy` of a large Data.fs, ours and ZODB's copyTransactionsFrom.
    Copy {
        /// Python with ZODB installed, to measure the reference.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Transactions Python copies (a prefix; its rate is scaled to the file).
        #[arg(long, default_value_t = 100)]
        python_txns: usize,
        /// A large Data.fs (bench/gen_bench_db.py makes one); read-only.
        path: PathBuf,
        /// Scratch destination (must not exist; removed after each run).
        dst: PathBuf,
    },
    /// The FileStorage write side: commit rates vs fsync and Python, pack.
    Write {
        /// Python with ZODB installed, to measure the reference.
        #[arg(long)]
        python: Option<PathBuf>,
        /// Also pack a copy of this Data.fs (ours and ZODB's), with gc.
        #[arg(long)]
        pack: Option<PathBuf>,
        /// Directory for scratch files (on the filesystem to measure).
        dir: PathBuf,
    },
}

fn flavor(py2: bool) -> Flavor {
    if py2 { Flavor::Py2 } else { Flavor::Py3 }
}

/// A `<tidrange>` argument; none means the whole history.
fn tidrange_arg(
    arg: Option<&str>,
) -> anyhow::Result<(Option<zodb_core::Tid>, Option<zodb_core::Tid>)> {
    match arg {
        Some(r) => Ok(zodbrs::tidrange::parse_tidrange_local(r)?),
        None => Ok((None, None)),
    }
}

/// A storage URL argument (a path, file:// or zeo://).
fn parse_url(url: &str) -> anyhow::Result<StorageUrl> {
    Ok(storage_url::parse(url)?)
}

/// Opens a storage URL argument.
fn open_url(url: &str, access: Access) -> anyhow::Result<storage_url::Opened> {
    Ok(open(&parse_url(url)?, access)?)
}

/// The Data.fs of a tool that reads the file format itself.
fn file_only(url: &str, tool: &str) -> anyhow::Result<PathBuf> {
    Ok(storage_url::file_only(url, tool)?)
}

/// A `--magic` argument (clap allows only these two).
fn magic_arg(m: &str) -> filestorage::format::Magic {
    match m {
        "FS21" => filestorage::format::Magic::Fs21,
        _ => filestorage::format::Magic::Fs30,
    }
}

/// The size of stdin when it is a regular file (`< DUMP`), for a progress
/// bar; `None` for a pipe.
fn stdin_len() -> Option<u64> {
    use std::os::fd::AsFd;
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match cli.cmd {
        Cmd::Fsdump {
            verbose: true,
            py2,
            path,
        } => {
            let path = file_only(&path, "fsdump")?;
            let file = DataFile::open(&path, BackendKind::Mmap)?;
            tools::fsdumpv::fsdumpv(&file, flavor(py2), &mut out)?;
        }
        Cmd::Fsdump {
            verbose: false,
            py2,
            path,
        } => {
            let path = file_only(&path, "fsdump")?;
            let mut bar = tools::progress::ByteProgress::new("fsdump");
            let fs = FileStorage::open_with_progress(&path, &Default::default(), &mut |p, s| {
                bar.at(p, s)
            })?;
            let size = fs.end_pos();
            tools::fsdump::fsdump(&fs, flavor(py2), &mut out, &mut |p| bar.at(p, size))?;
        }
        Cmd::Fstail { n, py2, path } => {
            let path = file_only(&path, "fstail")?;
            let file = DataFile::open(&path, BackendKind::Mmap)?;
            tools::fstail::fstail(&file, n, flavor(py2), &mut out)?;
        }
        Cmd::Fsrefs { v, path } => {
            let path = file_only(&path, "fsrefs")?;
            let mut bar = tools::progress::ByteProgress::new("fsrefs");
            let fs = FileStorage::open_with_progress(&path, &Default::default(), &mut |p, s| {
                bar.at(p, s)
            })?;
            tools::fsrefs::fsrefs(&fs, v > 0, &mut out, &mut io::stderr(), &mut |p, s| {
                bar.at(p, s)
            })?;
        }
        Cmd::Fsoids { file, path, oids } => {
            let path = file_only(&path, "fsoids")?;
            let mut texts = oids;
            if let Some(f) = file {
                let list = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                texts.extend(
                    list.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_owned),
                );
            }
            let oids = texts
                .iter()
                .map(|t| tools::fsoids::parse_oid_arg(t))
                .collect::<Result<Vec<_>, _>>()?;
            let fs = FileStorage::open_read_only(&path)?;
            let mut bar = tools::progress::ByteProgress::new("fsoids");
            tools::fsoids::fsoids(&fs, &oids, &mut out, &mut |p, s| bar.at(p, s))?;
        }
        Cmd::Dump {
            hashonly,
            pretty,
            py2,
            path,
            tidrange,
        } => {
            let (tidmin, tidmax) = tidrange_arg(tidrange.as_deref())?;
            let db = open_url(&path, Access::READ)?;
            let fs = db.read();
            let pretty = if pretty == "zpickledis" {
                tools::zodbdump::Pretty::ZPickleDis
            } else {
                tools::zodbdump::Pretty::Raw
            };
            let opts = tools::zodbdump::DumpOptions {
                hash_only: hashonly,
                pretty,
                dis_flavor: if py2 {
                    DisFlavor::Python2
                } else {
                    DisFlavor::Python3
                },
            };
            let mut bar = tools::progress::TidProgress::new(
                "dump",
                tidmin,
                tidmax.unwrap_or_else(|| fs.last_transaction()),
            );
            tools::zodbdump::zodbdump(fs, tidmin, tidmax, opts, &mut out, &mut |tid| bar.at(tid))?;
        }
        Cmd::Catobj {
            hashonly,
            raw,
            path,
            xids,
        } => {
            let xids = xids
                .iter()
                .map(|x| tools::catobj::parse_xid(x))
                .collect::<Result<Vec<_>, _>>()?;
            let mode = match (hashonly, raw) {
                (_, true) => tools::catobj::CatMode::Raw,
                (true, false) => tools::catobj::CatMode::HashOnly,
                (false, false) => tools::catobj::CatMode::Dump,
            };
            let db = open_url(&path, Access::READ)?;
            tools::catobj::catobj(db.read(), &xids, mode, &mut out)?;
        }
        Cmd::Info { path, params } => {
            let db = open_url(&path, Access::READ)?;
            let name = db.info_name();
            tools::info::zodbinfo(db.sized(), &name, &params, &mut out, &mut io::stderr())?;
        }
        Cmd::Analyze {
            csv,
            path,
            tidrange,
        } => {
            let (tidmin, tidmax) = tidrange_arg(tidrange.as_deref())?;
            let db = open_url(&path, Access::READ)?;
            let fs = db.read();
            let mut bar = tools::progress::TidProgress::new(
                "analyze",
                tidmin,
                tidmax.unwrap_or_else(|| fs.last_transaction()),
            );
            let report = tools::analyze::analyze(fs, tidmin, tidmax, &mut |tid| bar.at(tid))?;
            drop(bar);
            tools::analyze::report(&report, csv, &mut out)?;
        }
        Cmd::Reindex { check: true, path } => {
            let path = file_only(&path, "reindex")?;
            let report = tools::reindex::check(&path, &mut out)?;
            if report.mismatches > 0 {
                out.flush()?;
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Reindex { check: false, path } => {
            let path = file_only(&path, "reindex")?;
            let mut bar = tools::progress::ByteProgress::new("reindex");
            tools::pack::reindex(&path, &mut out, &mut |pos, size| bar.at(pos, size))?;
        }
        Cmd::Pack {
            days,
            time,
            no_gc,
            path,
        } => {
            let t = match (days, time) {
                (Some(d), _) => tools::pack::days_ago(d)?,
                (None, Some(t)) => tools::pack::parse_pack_time(&t)?,
                (None, None) => tools::pack::days_ago(0.0)?,
            };
            match parse_url(&path)? {
                StorageUrl::File { path, .. } => {
                    tools::pack::pack(&path, t, !no_gc, &mut out)?;
                }
                url => {
                    let db = open(&url, Access::write(false))?;
                    tools::pack::pack_storage(db.write(), &url.to_string(), t, !no_gc, &mut out)?;
                }
            }
        }
        Cmd::Bench {
            what:
                BenchCmd::Fs {
                    python,
                    loads,
                    path,
                },
        } => {
            zodbrs::bench::bench_fs(&path, python.as_deref(), loads, &mut out)?;
        }
        Cmd::Bench {
            what: BenchCmd::Write { python, pack, dir },
        } => {
            zodbrs::bench::bench_write(&dir, python.as_deref(), pack.as_deref(), &mut out)?;
        }
        Cmd::Bench {
            what:
                BenchCmd::Array {
                    python,
                    runs,
                    path,
                    oid,
                },
        } => {
            let oid = tools::bigfile::parse_oid(&oid)?;
            zodbrs::bench::bench_array(&path, oid, python.as_deref(), runs, &mut out)?;
        }
        Cmd::Bench {
            what: BenchCmd::Pager { python, mib, dir },
        } => {
            zodbrs::bench::bench_pager(&dir, python.as_deref(), mib.max(2), &mut out)?;
        }
        Cmd::Bigfile {
            what: BigfileCmd::Cat { at, path, oid },
        } => {
            let oid = tools::bigfile::parse_oid(&oid)?;
            let at = at_arg(at.as_deref())?;
            let db = open_url(&path, Access::READ)?;
            let mut bar = None;
            tools::bigfile::cat(db.read(), oid, at, &mut out, &mut |done, total| {
                bar.get_or_insert_with(|| tools::progress::StreamProgress::new("cat", Some(total)))
                    .at(done)
            })?;
        }
        Cmd::Array {
            what: ArrayCmd::Info { at, path, oid },
        } => {
            let oid = tools::bigfile::parse_oid(&oid)?;
            let at = at_arg(at.as_deref())?;
            let db = open_url(&path, Access::READ)?;
            tools::array::info(db.read(), oid, at, &mut out)?;
        }
        Cmd::Array {
            what:
                ArrayCmd::Export {
                    at,
                    path,
                    oid,
                    out: npy,
                },
        } => {
            let oid = tools::bigfile::parse_oid(&oid)?;
            let at = at_arg(at.as_deref())?;
            let db = open_url(&path, Access::READ)?;
            let mut bar = None;
            tools::array::export(db.read(), oid, at, &npy, &mut |done, total| {
                bar.get_or_insert_with(|| {
                    tools::progress::StreamProgress::new("export", Some(total))
                })
                .at(done)
            })?;
        }
        Cmd::Array {
            what:
                ArrayCmd::Import {
                    key,
                    blksize,
                    format,
                    txn_mib,
                    npy,
                    path,
                },
        } => {
            let opts = zodbrs::tools::array::ImportOptions {
                key,
                blksize,
                format: format
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--format: {e}"))?,
                txn_bytes: txn_mib.max(1) << 20,
            };
            let db = open_url(&path, Access::write(true).bulk())?;
            let mut bar = None;
            let report = tools::array::import(db.write(), &npy, &opts, &mut |done, total| {
                bar.get_or_insert_with(|| {
                    tools::progress::StreamProgress::new("import", Some(total))
                })
                .at(done)
            })?;
            drop(bar);
            db.sync()?;
            writeln!(
                out,
                "root[{:?}] = ZBigArray {} (ZBigFile {}): {} blocks stored, {} zero blocks left as holes, {} bytes, {} transactions",
                opts.key,
                report.oid,
                report.file,
                report.blocks,
                report.holes,
                report.bytes,
                report.transactions
            )?;
        }
        Cmd::Demo { what } => {
            let (path, opts, generate) = match what {
                DemoCmd::Gen {
                    worksize,
                    budget,
                    path,
                } => (path, (worksize, budget), true),
                DemoCmd::Read { budget, path } => (path, (0, budget), false),
            };
            let opts = tools::demo::DemoOptions {
                worksize: opts.0 << 20,
                budget: opts.1.max(8) << 20,
            };
            if generate {
                // A missing file is created; an existing database is added to.
                let db = open_url(&path, Access::write(true).bulk())?;
                tools::demo::generate(db.write_arc(), &opts, &mut out)?;
                db.sync()?;
            } else {
                // Read-only (a ZEO client registers read-only): the demo
                // only loads, through the write trait the pager needs.
                let db = open_url(&path, Access::READ)?;
                let oid = tools::demo::root_array(db.write())?;
                tools::demo::read(db.write_arc(), oid, &opts, &mut out)?;
            }
        }
        Cmd::Zblk {
            what:
                ZblkCmd::Convert {
                    to,
                    txn_mib,
                    path,
                    oid,
                },
        } => {
            let oid = tools::bigfile::parse_oid(&oid)?;
            let to = zblk::format::BlockFormat::from_class(zblk::format::FILE_ZODB, &to)
                .ok_or_else(|| anyhow::anyhow!("--to {to}: not ZBlk0 or ZBlk1"))?;
            let db = open_url(&path, Access::write(false))?;
            let mut bar = None;
            let report = tools::zblk::convert(
                db.write(),
                oid,
                to,
                txn_mib.max(1) << 20,
                &mut |done, total| {
                    bar.get_or_insert_with(|| {
                        tools::progress::StreamProgress::new("convert", Some(total))
                    })
                    .at(done)
                },
            )?;
            drop(bar);
            writeln!(
                out,
                "ZBigFile {}: {} of {} blocks rewritten as {}, {} transactions",
                report.file,
                report.converted,
                report.blocks,
                to.class_name(),
                report.transactions
            )?;
        }
        Cmd::Bench {
            what:
                BenchCmd::ArrayWrite {
                    python,
                    mib,
                    blksize,
                    format,
                    dir,
                },
        } => {
            let format = format
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--format: {e}"))?;
            zodbrs::bench::bench_array_write(
                &dir,
                python.as_deref(),
                mib,
                blksize,
                format,
                &mut out,
            )?;
        }
        Cmd::Copy {
            force,
            magic,
            src,
            dst,
        } => {
            let opts = tools::copy::CopyOptions {
                force,
                magic: magic.as_deref().map(magic_arg),
            };
            let mut bar = None;
            tools::copy::copy_url(
                &parse_url(&src)?,
                &parse_url(&dst)?,
                opts,
                &mut io::stderr(),
                &mut |tid, last| {
                    bar.get_or_insert_with(|| tools::progress::TidProgress::new("copy", None, last))
                        .at(tid)
                },
            )?;
        }
        Cmd::Restore { magic, path } => {
            let db = open_url(&path, Access::write(true).bulk().magic(magic_arg(&magic)))?;
            let stdin = io::stdin();
            let mut bar = tools::progress::StreamProgress::new("restore", stdin_len());
            let mut input = io::BufReader::with_capacity(1 << 20, stdin.lock());
            match db.file() {
                Some((fs, _)) => {
                    tools::restore::restore(fs, &mut input, &mut out, &mut |pos| bar.at(pos))?;
                }
                None => {
                    tools::restore::restore_into(db.write(), &mut input, &mut out, &mut |pos| {
                        bar.at(pos)
                    })?;
                }
            }
        }
        Cmd::Bench {
            what:
                BenchCmd::Copy {
                    python,
                    python_txns,
                    path,
                    dst,
                },
        } => {
            zodbrs::bench::bench_copy(&path, &dst, python.as_deref(), python_txns, &mut out)?;
        }
        Cmd::Serve {
            address,
            filename,
            read_only,
            timeout,
            configure,
            pid_file,
            no_group_commit,
        } => {
            let opts = zodbrs::serve::ServeOptions {
                address,
                filenames: filename,
                read_only,
                timeout,
                configure,
                pid_file,
                no_group_commit,
            };
            zodbrs::serve::serve(&opts)?;
        }
        Cmd::Bench {
            what:
                BenchCmd::Zeo {
                    address,
                    clients,
                    seconds,
                    write,
                    storage,
                    oids,
                },
        } => {
            let opts = zodbrs::serve::bench::BenchOptions {
                address: zodbrs::serve::config::Address::parse(&address)
                    .map_err(anyhow::Error::msg)?,
                storage,
                clients,
                seconds,
                write,
                oids,
            };
            zodbrs::serve::bench::bench_zeo(&opts, &mut out)?;
        }
        Cmd::Bench {
            what: BenchCmd::Loopback { clients, seconds },
        } => {
            zodbrs::serve::bench::bench_loopback(clients, seconds, &mut out)?;
        }
        Cmd::Bench {
            what:
                BenchCmd::ZeoClient {
                    url,
                    python,
                    loads,
                    seconds,
                    window,
                    py_threads,
                    oids,
                },
        } => {
            let opts = zodbrs::zeo_client_bench::ZeoClientBenchOptions {
                url,
                python,
                loads,
                seconds,
                window,
                py_threads,
                oids,
            };
            zodbrs::zeo_client_bench::bench_zeo_client(&opts, &mut out)?;
        }
        Cmd::Fstest { v, path } => {
            let path = file_only(&path, "fstest")?;
            let file = DataFile::open(&path, BackendKind::Mmap).with_context(|| "fstest")?;
            let mut bar = tools::progress::ByteProgress::new("fstest");
            if let Err(e) =
                tools::fstest::fstest(&file, u32::from(v), &mut out, &mut |p, s| bar.at(p, s))?
            {
                out.flush()?;
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // A reader that stopped early (`zodbrs dump ... | head`): tools
            // report it as ToolError::Output, with the io::Error as source.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("zodbrs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
