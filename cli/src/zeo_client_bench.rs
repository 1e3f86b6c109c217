//! `zodbrs bench zeo-client`: our ZEO client against Python's
//! `ClientStorage`, on the same running server (ours or `runzeo`), in the
//! same run. Both with their object cache off, so every load is a round
//! trip to the server:
//!
//! - **latency**: sequential `loadBefore` of random oids on one
//!   connection, one request at a time;
//! - **pipelined throughput**: ours keeps `window` loads in flight from
//!   one thread ([`ZeoClient::start_load_before`]); Python's way to have
//!   several in flight from one process is threads sharing the
//!   `ClientStorage` (its connection carries their requests together).

use crate::bench::Rng;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use zeo_proto::client_storage::{Address, ZeoClient};
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

use crate::ToolError;
use crate::bench::{Row, print_table};
use crate::storage_url::{self, StorageUrl};

/// The Python side, embedded so the binary needs no source checkout.
const PY_ZEO_CLIENT_BENCH: &str = include_str!("../../bench/py_zeo_client_bench.py");

/// What to measure.
#[derive(Debug, Clone)]
pub struct ZeoClientBenchOptions {
    /// The server: `zeo://host:port?storage=NAME` or `zeo:///socket`.
    pub url: String,
    /// The Python with ZEO, to measure ClientStorage too.
    pub python: Option<PathBuf>,
    /// Sequential loads for the latency figure.
    pub loads: usize,
    /// Seconds of pipelined loading (each side).
    pub seconds: f64,
    /// Our loads in flight at once.
    pub window: usize,
    /// Python threads sharing the ClientStorage.
    pub py_threads: usize,
    /// Load oids below this (default: the storage's object count).
    pub oids: Option<u64>,
}

/// A load's outcome: a missing oid is still a round trip.
fn settle(r: Result<Option<zodb_core::storage::Revision>, StorageError>) -> Result<(), ToolError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_pos_key_error() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Measures ours, then Python's, and prints the table.
pub fn bench_zeo_client(
    opts: &ZeoClientBenchOptions,
    out: &mut dyn Write,
) -> Result<Vec<Row>, ToolError> {
    let StorageUrl::Zeo {
        address,
        mut options,
    } = storage_url::parse(&opts.url).map_err(crate::storage_url::OpenError::from)?
    else {
        return Err(ToolError::Usage(format!(
            "{}: bench zeo-client needs a zeo:// URL",
            opts.url
        )));
    };
    options.cache_size = 0;
    options.read_only = true;
    let storage = options.storage.clone();
    let zeo = ZeoClient::connect(address.clone(), *options)
        .map_err(|e| ToolError::Storage(StorageError::from(e)))?;
    let noids = opts.oids.unwrap_or_else(|| zeo.object_count()).max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut oid = move || Oid(rng.next() % noids);

    // Latency: one request at a time.
    for _ in 0..200 {
        settle(zeo.load_before(oid(), Tid::MAX))?;
    }
    let loads = opts.loads.max(1);
    let t = Instant::now();
    for _ in 0..loads {
        settle(zeo.load_before(oid(), Tid::MAX))?;
    }
    let latency_us = t.elapsed().as_secs_f64() / loads as f64 * 1e6;

    // Throughput: `window` loads in flight from this one thread.
    let window = opts.window.max(1);
    let deadline = Duration::from_secs_f64(opts.seconds);
    let mut inflight = VecDeque::with_capacity(window);
    let mut done = 0u64;
    let t = Instant::now();
    while t.elapsed() < deadline {
        while inflight.len() < window {
            inflight.push_back(zeo.start_load_before(oid(), Tid::MAX)?);
        }
        if let Some(p) = inflight.pop_front() {
            settle(p.wait())?;
            done += 1;
        }
    }
    for p in inflight {
        settle(p.wait())?;
        done += 1;
    }
    let loads_per_s = done as f64 / t.elapsed().as_secs_f64();
    zeo.close();

    let py: Option<serde_json::Value> = match &opts.python {
        Some(py) => {
            writeln!(out, "running Python's ClientStorage ({})...", py.display())?;
            let (host, port) = match &address {
                Address::Tcp { host, port } => (host.clone(), port.to_string()),
                Address::Unix(p) => (p.display().to_string(), "-".to_owned()),
            };
            let o = Command::new(py)
                .arg("-c")
                .arg(PY_ZEO_CLIENT_BENCH)
                .args([
                    host,
                    port,
                    storage,
                    noids.to_string(),
                    (loads / 2).max(1000).to_string(),
                    opts.seconds.to_string(),
                    opts.py_threads.max(1).to_string(),
                ])
                .output()
                .map_err(|e| ToolError::io(py, e))?;
            if !o.status.success() {
                return Err(ToolError::Usage(format!(
                    "python ClientStorage bench failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                )));
            }
            Some(serde_json::from_slice(&o.stdout).map_err(|e| {
                ToolError::Usage(format!("python ClientStorage bench printed no JSON: {e}"))
            })?)
        }
        None => None,
    };
    let get = |k: &str| py.as_ref().and_then(|j| j.get(k)?.as_f64());
    let rows = vec![
        Row {
            what: "loadBefore latency, 1 connection, sequential".into(),
            ours: latency_us,
            python: get("latency_us"),
            unit: "µs",
            higher_is_better: false,
        },
        Row {
            what: format!(
                "loads/s, 1 connection (ours: {window} in flight from 1 thread; Python: {} threads)",
                opts.py_threads.max(1)
            ),
            ours: loads_per_s,
            python: get("loads_per_s"),
            unit: "loads/s",
            higher_is_better: true,
        },
    ];
    print_table(&rows, out)?;
    Ok(rows)
}
