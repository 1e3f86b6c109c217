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
use zodb_core::ReadStorage;
use zodb_core::pickle::DisFlavor;
use zodbrs::pyrepr::Flavor;
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
        /// The Data.fs.
        path: PathBuf,
    },
    /// Show the last transactions, newest first (ZODB's fstail).
    Fstail {
        /// Number of transactions.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// Print as Python 2's fstail did.
        #[arg(long)]
        py2: bool,
        /// The Data.fs.
        path: PathBuf,
    },
    /// Report references to missing, unloadable or undone objects (ZODB's fsrefs).
    Fsrefs {
        /// Explain objects that fail to load.
        #[arg(short, action = clap::ArgAction::Count)]
        v: u8,
        /// The Data.fs.
        path: PathBuf,
    },
    /// Trace every appearance of oids in a Data.fs (ZODB's fsoids).
    Fsoids {
        /// A file with one oid per line, in addition to OIDS.
        #[arg(short = 'f')]
        file: Option<PathBuf>,
        /// The Data.fs.
        path: PathBuf,
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
        /// The Data.fs.
        path: PathBuf,
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
        /// The Data.fs.
        path: PathBuf,
        /// OID (hex), OID@TID or TID:OID: the object as of TID (default: latest).
        #[arg(required = true)]
        xids: Vec<String>,
    },
    /// Print general information about a database (zodbtools' `zodb info`).
    Info {
        /// The Data.fs.
        path: PathBuf,
        /// Parameters to print (name, size, head, last_tid); default: all, with names.
        params: Vec<String>,
    },
    /// Report space used per class (zodbtools' `zodb analyze`).
    Analyze {
        /// Print the per-class table as CSV.
        #[arg(short, long)]
        csv: bool,
        /// The Data.fs.
        path: PathBuf,
        /// `tidmin..tidmax`, both ends optional and inclusive.
        tidrange: Option<String>,
    },
    /// Verify Data.fs.index against a full scan of the file (--check).
    Reindex {
        /// Compare the saved index with the file and report every mismatch.
        #[arg(long, required = true)]
        check: bool,
        /// The Data.fs.
        path: PathBuf,
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
        /// The Data.fs.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match cli.cmd {
        Cmd::Fsdump {
            verbose: true,
            py2,
            path,
        } => {
            let file = DataFile::open(&path, BackendKind::Mmap)?;
            tools::fsdumpv::fsdumpv(&file, flavor(py2), &mut out)?;
        }
        Cmd::Fsdump {
            verbose: false,
            py2,
            path,
        } => {
            let fs = FileStorage::open_read_only(&path)?;
            tools::fsdump::fsdump(&fs, flavor(py2), &mut out, &mut |_| {})?;
        }
        Cmd::Fstail { n, py2, path } => {
            let file = DataFile::open(&path, BackendKind::Mmap)?;
            tools::fstail::fstail(&file, n, flavor(py2), &mut out)?;
        }
        Cmd::Fsrefs { v, path } => {
            let fs = FileStorage::open_read_only(&path)?;
            tools::fsrefs::fsrefs(&fs, v > 0, &mut out, &mut io::stderr())?;
        }
        Cmd::Fsoids { file, path, oids } => {
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
            tools::fsoids::fsoids(&fs, &oids, &mut out)?;
        }
        Cmd::Dump {
            hashonly,
            pretty,
            py2,
            path,
            tidrange,
        } => {
            let (tidmin, tidmax) = tidrange_arg(tidrange.as_deref())?;
            let fs = FileStorage::open_read_only(&path)?;
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
            tools::zodbdump::zodbdump(&fs, tidmin, tidmax, opts, &mut out, &mut |tid| bar.at(tid))?;
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
            let fs = FileStorage::open_read_only(&path)?;
            tools::catobj::catobj(&fs, &xids, mode, &mut out)?;
        }
        Cmd::Info { path, params } => {
            let fs = FileStorage::open_read_only(&path)?;
            let name = tools::info::normpath(&path.to_string_lossy());
            tools::info::zodbinfo(&fs, &name, &params, &mut out, &mut io::stderr())?;
        }
        Cmd::Analyze {
            csv,
            path,
            tidrange,
        } => {
            let (tidmin, tidmax) = tidrange_arg(tidrange.as_deref())?;
            let fs = FileStorage::open_read_only(&path)?;
            let mut bar = tools::progress::TidProgress::new(
                "analyze",
                tidmin,
                tidmax.unwrap_or_else(|| fs.last_transaction()),
            );
            let report = tools::analyze::analyze(&fs, tidmin, tidmax, &mut |tid| bar.at(tid))?;
            drop(bar);
            tools::analyze::report(&report, csv, &mut out)?;
        }
        Cmd::Reindex { check: _, path } => {
            let report = tools::reindex::check(&path, &mut out)?;
            if report.mismatches > 0 {
                out.flush()?;
                return Ok(ExitCode::FAILURE);
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
        Cmd::Fstest { v, path } => {
            let file = DataFile::open(&path, BackendKind::Mmap).with_context(|| "fstest")?;
            if let Err(e) = tools::fstest::fstest(&file, u32::from(v), &mut out)? {
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
