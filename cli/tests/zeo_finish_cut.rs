//! The connection cut during `tpc_finish`, deterministically: a proxy
//! between our client and the server (Python's `runzeo` and `zodbrs
//! serve`) cuts both sides at the client's `tpc_finish` frame, either
//! after forwarding it (the server commits, the client never hears) or
//! instead of forwarding it (the server aborts the voted transaction).
//! Either way the client reports `FinishOutcomeUnknown`, reconnects by
//! itself, and the database holds all of the transaction or none of it,
//! which the reconnected client (its cache verified) sees as a fresh
//! client does.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient, ZeoError};
use zodb_core::{Oid, ReadStorage, StorageError, TxnMeta, WriteStorage};
use zodb_it::zeo::{ServerKind, ZeoServer};

fn zodbrs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zodbrs"))
}

/// What the proxy does with the first `tpc_finish` it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Forward it, then cut: the server has the request, the client never
    /// gets the reply.
    AfterForwarding,
    /// Cut without forwarding it.
    Instead,
}

/// A TCP proxy to `target` that cuts one connection at the first
/// `tpc_finish` frame from the client; later connections pass through.
struct Proxy {
    port: u16,
}

impl Proxy {
    fn start(target: u16, cut: Cut) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(true));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let armed = armed.clone();
                // Set before the request can reach the server, so that no
                // byte of its answer is forwarded.
                let cut_flag = Arc::new(AtomicBool::new(false));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let flag = cut_flag.clone();
                std::thread::spawn(move || server_to_client(s2, c2, &flag));
                std::thread::spawn(move || {
                    client_to_server(client, server, &armed, &cut_flag, cut);
                });
            }
        });
        Proxy { port }
    }
}

fn server_to_client(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Forwards frame by frame (4-byte big-endian length, payload), watching
/// for the method name `tpc_finish`.
fn client_to_server(
    mut from: TcpStream,
    mut to: TcpStream,
    armed: &AtomicBool,
    cut: &AtomicBool,
    how: Cut,
) {
    loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            break;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        if from.read_exact(&mut payload).is_err() {
            break;
        }
        let is_finish = payload.windows(10).any(|w| w == b"tpc_finish");
        if is_finish && armed.swap(false, Ordering::SeqCst) {
            cut.store(true, Ordering::SeqCst);
            if how == Cut::AfterForwarding {
                let _ = to.write_all(&len);
                let _ = to.write_all(&payload);
                let _ = to.flush();
                // Let the request be read before the server sees the
                // end of the stream.
                std::thread::sleep(Duration::from_millis(200));
            }
            break;
        }
        if to.write_all(&len).is_err() || to.write_all(&payload).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn client(port: u16) -> ZeoClient {
    ZeoClient::connect(
        Address::tcp("127.0.0.1", port),
        ClientOptions {
            wait_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn connection_cut_mid_finish_is_all_or_nothing() {
    let db = zodb_it::project_fixtures().join("history/Data.fs");
    for kind in [ServerKind::RunZeo, ServerKind::Zodbrs(zodbrs_bin())] {
        for how in [Cut::AfterForwarding, Cut::Instead] {
            let Some(server) = ZeoServer::start(kind.clone(), Some(&db), &Default::default())
            else {
                continue;
            };
            let what = format!("{kind:?} {how:?}");
            let proxy = Proxy::start(server.port(), how);
            let zeo = client(proxy.port);
            let last = zeo.server_last_transaction().unwrap();
            let (root, s0) = zeo.load(Oid::ROOT).unwrap();
            let (one, s1) = zeo.load(Oid(1)).unwrap();
            let mut txn = zeo.tpc_begin(TxnMeta::default()).unwrap();
            txn.store(Oid::ROOT, s0, one.clone()).unwrap();
            txn.store(Oid(1), s1, root.clone()).unwrap();
            txn.vote().unwrap();
            match txn.finish() {
                Err(StorageError::Backend(e)) => match e.downcast_ref::<ZeoError>() {
                    Some(ZeoError::FinishOutcomeUnknown { .. }) => {}
                    _ => panic!("{what}: {e}"),
                },
                other => panic!("{what}: {other:?}"),
            }
            // The truth, from a client that was never cut.
            let direct = client(server.port());
            let now = direct.server_last_transaction().unwrap();
            let r0 = direct.load(Oid::ROOT).unwrap();
            let r1 = direct.load(Oid(1)).unwrap();
            if now == last {
                assert_eq!(
                    (r0.clone(), r1.clone()),
                    ((root.clone(), s0), (one.clone(), s1)),
                    "{what}"
                );
            } else {
                // Both records, one transaction.
                assert_eq!(r0, (one.clone(), now), "{what}");
                assert_eq!(r1, (root.clone(), now), "{what}");
            }
            if how == Cut::Instead {
                assert_eq!(now, last, "{what}: committed without tpc_finish");
            }
            // The cut client reconnects, verifies its cache, and loads what
            // a fresh client loads.
            assert_eq!(zeo.server_last_transaction().unwrap(), now, "{what}");
            assert!(zeo.connection_count() >= 2, "{what}");
            assert_eq!(zeo.load(Oid::ROOT).unwrap(), r0, "{what}");
            assert_eq!(zeo.load(Oid(1)).unwrap(), r1, "{what}");
            assert_eq!(zeo.last_transaction(), now, "{what}");
            eprintln!(
                "{what}: {}",
                if now == last {
                    "nothing committed"
                } else {
                    "committed"
                }
            );
        }
    }
}
