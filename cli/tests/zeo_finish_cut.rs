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

use std::path::PathBuf;
use std::time::Duration;

use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient, ZeoError};
use zodb_core::{Oid, ReadStorage, StorageError, TxnMeta, WriteStorage};
use zodb_it::zeo::{Cut, CutProxy, ServerKind, ZeoServer};

fn zodbrs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zodbrs"))
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
        for how in [Cut::FinishAfterForwarding, Cut::FinishInstead] {
            let Some(server) = ZeoServer::start(kind.clone(), Some(&db), &Default::default())
            else {
                continue;
            };
            let what = format!("{kind:?} {how:?}");
            let proxy = CutProxy::start(server.port(), how);
            let zeo = client(proxy.port());
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
            assert!(proxy.fired(), "{what}");
            // The truth, from a client that was never cut, once the server
            // is done with the cut transaction: a finish forwarded just
            // before the cut may still be committing as we look.
            let direct = client(server.port());
            let look = || {
                let now = direct.server_last_transaction().unwrap();
                let r0 = direct.load(Oid::ROOT).unwrap();
                let r1 = direct.load(Oid(1)).unwrap();
                (now, r0, r1)
            };
            let mut seen = look();
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(100));
                let again = look();
                if again == seen {
                    break;
                }
                seen = again;
            }
            let (now, r0, r1) = seen;
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
            if how == Cut::FinishInstead {
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
