#![allow(clippy::unwrap_used, reason = "tests")]
use zeo_proto::client_storage::{Address, ClientOptions, ZeoClient};
use zodb_core::{Oid, ReadStorage, Tid};
use zodb_it::zeo::{ServerKind, ZeoServer};

#[test]
fn smoke() {
    let db = zodb_it::project_fixtures().join("history/Data.fs");
    let Some(server) = ZeoServer::start(ServerKind::RunZeo, Some(&db), &Default::default()) else {
        return;
    };
    let t = std::time::Instant::now();
    let zeo = ZeoClient::connect(
        Address::tcp("127.0.0.1", server.port()),
        ClientOptions::default(),
    )
    .unwrap();
    eprintln!(
        "connected in {:?}; last {}",
        t.elapsed(),
        zeo.last_transaction()
    );
    let (d, s) = zeo.load(Oid(0)).unwrap();
    eprintln!("root {} bytes serial {s}", d.len());
    let fs = filestorage::FileStorage::open_read_only(&db).unwrap();
    let t = std::time::Instant::now();
    let a: Vec<_> = zeo
        .iter_transactions(None, None)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    eprintln!("iterated {} txns in {:?}", a.len(), t.elapsed());
    let b: Vec<_> = fs
        .iter_transactions(None, None)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.info.tid, y.info.tid);
        assert_eq!(x.info.meta.user, y.info.meta.user);
        assert_eq!(x.info.meta.description, y.info.meta.description);
        assert_eq!(
            x.info.meta.extension, y.info.meta.extension,
            "ext of {}",
            x.info.tid
        );
        assert_eq!(x.records, y.records, "records of {}", x.info.tid);
    }
    let _ = Tid::ZERO;
}

/// `prefetch` starts loads without waiting; once their replies are in,
/// the loads that follow are cache hits with the server's data.
#[test]
fn prefetched_revisions_are_answered_from_the_cache() {
    let db = zodb_it::project_fixtures().join("history/Data.fs");
    let Some(server) = ZeoServer::start(ServerKind::RunZeo, Some(&db), &Default::default()) else {
        return;
    };
    let zeo = ZeoClient::connect(
        Address::tcp("127.0.0.1", server.port()),
        ClientOptions::default(),
    )
    .unwrap();
    assert!(zeo.supports_prefetch());
    let oids: Vec<Oid> = (1..=5).map(Oid).collect();
    let before = zeo.last_transaction().next();
    zeo.prefetch(&oids, before);
    // A round trip after the prefetch: its replies came before this one's.
    zeo.ping().unwrap();
    let misses = zeo.cache_stats().misses;
    let fs = filestorage::FileStorage::open_read_only(&db).unwrap();
    for &oid in &oids {
        let got = zeo.load_before(oid, before).unwrap().unwrap();
        let want = fs.load_before(oid, before).unwrap().unwrap();
        assert_eq!((got.data, got.serial), (want.data, want.serial), "{oid}");
    }
    let stats = zeo.cache_stats();
    assert_eq!(
        stats.misses, misses,
        "every load after the prefetch hit the cache"
    );
    assert!(stats.hits >= oids.len() as u64);
}
