//! `zodbrs bench zeo`: a load generator for any ZEO 5/6 server (ours or
//! Python's `runzeo`), so that both are measured by the same client.
//!
//! Each of N connections runs one request at a time, like a client thread
//! without a cache: random `loadBefore(oid, last+1)` (what a ZODB
//! connection sends for a current object), or with `--write` one-object
//! transactions (`tpc_begin`, `storea`, `vote`, `tpc_finish`) on an object
//! of its own, so writers contend for the commit lock but never conflict.
//! It prints the rate and the median and 99th-percentile latency.

use crate::bench::Rng;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeo_proto::client::{Client, ClientError, CommitResult};
use zeo_proto::encoding::{Encoding, load_before};
use zeo_proto::frame::{FrameCodec, HEADER_LEN};
use zeo_proto::reply::{LoadedRevision, ServerMessage};
use zeo_proto::request::Request;
use zodb_core::{Oid, Tid};

use super::config::Address;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The server.
    pub address: Address,
    /// Storage name to register with.
    pub storage: String,
    /// Concurrent connections.
    pub clients: usize,
    /// Duration of the measurement.
    pub seconds: f64,
    /// Commits instead of loads.
    pub write: bool,
    /// Loads pick oids in `0..oids` (default: the storage's object count).
    pub oids: Option<u64>,
}

/// The outcome.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Operations completed.
    pub ops: u64,
    /// Operations per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Loads of oids that do not exist (POSKeyError), or conflicts.
    pub misses: u64,
}

/// A bench failure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Connecting.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The runtime.
    #[error("{0}")]
    Other(String),
}

/// A small persistent record: class pickle and state, as ZODB writes one.
fn record(n: u64) -> Bytes {
    let mut v = b"\x80\x03czodbrs_bench\nCounter\nq\x00.\x80\x03}q\x01X\x05\x00\x00\x00valueq\x02J"
        .to_vec();
    v.extend_from_slice(&(n as u32).to_le_bytes());
    v.extend_from_slice(b"s.");
    Bytes::from(v)
}

async fn run_client<T: AsyncRead + AsyncWrite + Unpin>(
    mut c: Client<T>,
    opts: BenchOptions,
    id: usize,
    oids: u64,
    deadline: Instant,
) -> Result<(Vec<u32>, u64), BenchError> {
    // Loads register read-only, so that a read-only server serves them.
    let last = c.register(&opts.storage, !opts.write).await?;
    let mut lat = Vec::with_capacity(1 << 16);
    let mut misses = 0;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0x1000_0000_01b3));
    if opts.write {
        let v = c.call(&Request::NewOids { n: Some(1) }).await?;
        let oid = zeo_proto::reply::parse_oids(&v)
            .and_then(|o| o.first().copied())
            .ok_or_else(|| BenchError::Other("new_oids returned no oid".into()))?;
        let mut serial = Tid::ZERO;
        let mut n = 0u64;
        let mut txn = (id as i64 + 1) << 40;
        while Instant::now() < deadline {
            let t0 = Instant::now();
            txn += 1;
            match c.commit(txn, &[(oid, serial, record(n))]).await? {
                CommitResult::Committed(tid) => serial = tid,
                CommitResult::Conflicts(_) => misses += 1,
            }
            c.calls.clear();
            lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            n += 1;
        }
    } else if c.protocol().encoding == Encoding::Pickle {
        let (io, buf) = c.into_parts().await?;
        let mut loads = Loads {
            io,
            buf,
            before: last.next(),
        };
        let mut now = Instant::now();
        while now < deadline {
            let oid = Oid(rng.next() % oids.max(1));
            let t0 = now;
            if !loads.load(oid).await? {
                misses += 1;
            }
            now = Instant::now();
            lat.push((now - t0).as_micros().min(u128::from(u32::MAX)) as u32);
        }
    } else {
        let before = last.next();
        while Instant::now() < deadline {
            let oid = Oid(rng.next() % oids.max(1));
            let t0 = Instant::now();
            match c.load_before(oid, before).await {
                Ok(_) => {}
                Err(ClientError::Raised(_)) => misses += 1,
                Err(e) => return Err(e.into()),
            }
            lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            c.calls.clear();
        }
    }
    Ok((lat, misses))
}

/// One connection's loads, as lean as the server's answering of them:
/// the call is written from a template and a reply carrying a revision
/// is checked in the read buffer (`encoding::load_before`), so that the
/// generator's own work takes as little as possible of the CPU it shares
/// with the server. Anything else the server sends goes through the
/// general decoder, as with [`Client`].
struct Loads<T> {
    io: T,
    /// Bytes read but not yet taken as frames.
    buf: BytesMut,
    before: Tid,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Loads<T> {
    /// `loadBefore(oid, before)`: true for a revision or a `None`, false
    /// for an exception (`POSKeyError`).
    async fn load(&mut self, oid: Oid) -> Result<bool, BenchError> {
        let mut call = [0u8; HEADER_LEN + load_before::CALL_LEN];
        let (head, body) = call.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&(load_before::CALL_LEN as u32).to_be_bytes());
        body.copy_from_slice(&load_before::encode_call(oid, self.before));
        self.io.write_all(&call).await.map_err(closed)?;
        let msgid = load_before::PairId::of(oid, self.before);
        loop {
            let len = self.next_frame().await?;
            let payload = self
                .buf
                .get(HEADER_LEN..HEADER_LEN + len)
                .unwrap_or_default();
            if load_before::parse_reply(payload).is_some_and(|r| r.msgid == msgid) {
                self.buf.advance(HEADER_LEN + len);
                return Ok(true);
            }
            let payload = Bytes::copy_from_slice(payload);
            self.buf.advance(HEADER_LEN + len);
            let answer =
                ServerMessage::decode(Encoding::Pickle, &payload).map_err(ClientError::Message)?;
            let want = Request::load_before_msgid(oid, self.before);
            match answer {
                ServerMessage::Reply { msgid, result } if msgid.py_eq(&want) => {
                    LoadedRevision::from_value(&result).map_err(ClientError::from)?;
                    return Ok(true);
                }
                ServerMessage::Error { msgid, .. } if msgid.py_eq(&want) => return Ok(false),
                // Invalidations and other server calls; late replies.
                _ => {}
            }
        }
    }

    /// Reads until a whole frame is buffered; its payload's length.
    async fn next_frame(&mut self) -> Result<usize, BenchError> {
        loop {
            let framing = FrameCodec::default();
            let announced = framing
                .peek_len(&self.buf)
                .map_err(|e| BenchError::Other(format!("from the server: {e}")))?;
            if let Some(len) = announced {
                if self.buf.len() >= HEADER_LEN + len {
                    return Ok(len);
                }
                self.buf.reserve(HEADER_LEN + len - self.buf.len());
            }
            if self.io.read_buf(&mut self.buf).await.map_err(closed)? == 0 {
                return Err(ClientError::Closed.into());
            }
        }
    }
}

fn closed(e: std::io::Error) -> BenchError {
    BenchError::Other(format!("connection lost: {e}"))
}

async fn connect_tcp(addr: &Address) -> Result<Client<tokio::net::TcpStream>, BenchError> {
    let Address::Tcp { host, port } = addr else {
        return Err(BenchError::Other("not a TCP address".into()));
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let s = tokio::net::TcpStream::connect((host, *port))
        .await
        .map_err(|source| BenchError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    s.set_nodelay(true).map_err(|source| BenchError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    Ok(Client::handshake(s).await?)
}

async fn connect_unix(addr: &Address) -> Result<Client<tokio::net::UnixStream>, BenchError> {
    let Address::Unix(p) = addr else {
        return Err(BenchError::Other("not a Unix address".into()));
    };
    let s = tokio::net::UnixStream::connect(p)
        .await
        .map_err(|source| BenchError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    Ok(Client::handshake(s).await?)
}

/// Runs the benchmark and prints its result to `out`.
pub fn bench_zeo(opts: &BenchOptions, out: &mut dyn Write) -> Result<BenchResult, BenchError> {
    // Sockets only: without tokio's timer each worker's park skips a clock
    // read, CPU the generator would take from the server it measures.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let result = rt.block_on(async {
        // How many oids to pick from.
        let oids = match opts.oids {
            Some(n) => n,
            None => {
                let info = match &opts.address {
                    Address::Tcp { .. } => {
                        let mut c = connect_tcp(&opts.address).await?;
                        c.register(&opts.storage, true).await?;
                        c.call(&Request::GetInfo).await?
                    }
                    Address::Unix(_) => {
                        let mut c = connect_unix(&opts.address).await?;
                        c.register(&opts.storage, true).await?;
                        c.call(&Request::GetInfo).await?
                    }
                };
                info.dict_get("length")
                    .and_then(|v| v.as_i64())
                    .map_or(1, |n| n.max(1) as u64)
            }
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(opts.seconds);
        let mut tasks = Vec::with_capacity(opts.clients);
        for id in 0..opts.clients.max(1) {
            let o = opts.clone();
            match &opts.address {
                Address::Tcp { .. } => {
                    let c = connect_tcp(&opts.address).await?;
                    tasks.push(tokio::spawn(run_client(c, o, id, oids, deadline)));
                }
                Address::Unix(_) => {
                    let c = connect_unix(&opts.address).await?;
                    tasks.push(tokio::spawn(run_client(c, o, id, oids, deadline)));
                }
            }
        }
        let mut lat: Vec<u32> = Vec::new();
        let mut misses = 0;
        for t in tasks {
            let (l, m) = t.await.map_err(|e| BenchError::Other(e.to_string()))??;
            lat.extend(l);
            misses += m;
        }
        let elapsed = start.elapsed().as_secs_f64();
        lat.sort_unstable();
        let pct = |p: f64| -> Duration {
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            Duration::from_micros(u64::from(lat.get(i).copied().unwrap_or(0)))
        };
        Ok::<_, BenchError>(BenchResult {
            ops: lat.len() as u64,
            rate: lat.len() as f64 / elapsed,
            p50: pct(0.5),
            p99: pct(0.99),
            misses,
        })
    })?;
    let what = if opts.write { "commits/s" } else { "loads/s" };
    let _ = writeln!(
        out,
        "{}: {} clients, {:.1} s: {what} {:.0}  p50 {} us  p99 {} us  ({} ops, {} {})",
        opts.address,
        opts.clients,
        opts.seconds,
        result.rate,
        result.p50.as_micros(),
        result.p99.as_micros(),
        result.ops,
        result.misses,
        if opts.write {
            "conflicts"
        } else {
            "POSKeyErrors"
        }
    );
    Ok(result)
}

/// A `loadBefore` request (66 bytes with ClientStorage's `(oid, tid)`
/// msgid) and the reply for a record of about 170 bytes, on the wire with
/// the frame header, as `bench zeo` exchanges them.
const ECHO_REQUEST: usize = 66;
const ECHO_REPLY: usize = 230;

/// `zodbrs bench loopback`: the ceiling `bench zeo` runs under on this
/// machine. A server that answers each request with a reply of a
/// `loadBefore`'s size and does nothing else, and the same connections
/// sending one request at a time, each side on its own runtime as the
/// real server and generator are. Whatever `bench zeo` measures below
/// this is the protocol and the storage; this is the kernel's TCP and the
/// scheduler.
pub fn bench_loopback(
    clients: usize,
    seconds: f64,
    out: &mut dyn Write,
) -> Result<f64, BenchError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let other = |e: std::io::Error| BenchError::Other(e.to_string());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(other)?;
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
        .map_err(other)?;
    let addr = listener.local_addr().map_err(other)?;
    server_rt.spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut req = [0u8; ECHO_REQUEST];
                let rep = [7u8; ECHO_REPLY];
                while s.read_exact(&mut req).await.is_ok() {
                    if s.write_all(&rep).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    // As `bench zeo`'s runtime: sockets only.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .map_err(other)?;
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = client_rt.block_on(async {
        let mut conns = Vec::with_capacity(clients.max(1));
        for _ in 0..clients.max(1) {
            let s = tokio::net::TcpStream::connect(addr).await.map_err(other)?;
            s.set_nodelay(true).map_err(other)?;
            conns.push(s);
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                let done = done.clone();
                tokio::spawn(async move {
                    let req = [1u8; ECHO_REQUEST];
                    let mut rep = [0u8; ECHO_REPLY];
                    while Instant::now() < deadline {
                        s.write_all(&req).await?;
                        s.read_exact(&mut rep).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, std::io::Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await
                .map_err(|e| BenchError::Other(e.to_string()))?
                .map_err(other)?;
        }
        Ok::<_, BenchError>(start.elapsed().as_secs_f64())
    })?;
    server_rt.shutdown_background();
    let rate = done.load(Ordering::Relaxed) as f64 / elapsed;
    let _ = writeln!(
        out,
        "loopback echo: {} clients, {seconds:.1} s: round trips/s {rate:.0} ({ECHO_REQUEST}-byte requests, {ECHO_REPLY}-byte replies)",
        clients.max(1)
    );
    Ok(rate)
}
