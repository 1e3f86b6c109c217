//! The server over loopback, driven by the crate's own minimal client and
//! by raw frames: handshake, loads, commits, invalidations to other
//! connections and their ordering, conflicts at vote, the commit lock
//! across connections (a client vanishing mid-commit, a transaction
//! timeout), undo, iteration, pack, blobs, group commit, shutdown — and bad
//! input on one connection while others keep being served and no committed
//! data changes.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use zeo_proto::client::{Client, ClientError, CommitResult};
use zeo_proto::encoding::Encoding;
use zeo_proto::exception::ZeoException;
use zeo_proto::frame::frame_bytes;
use zeo_proto::message::Message;
use zeo_proto::reply::{ClientCall, ServerMessage, VoteItem};
use zeo_proto::request::{Request, TxnId};
use zeo_proto::server::{Server, ServerConfig, StorageSpec, interfaces};
use zeo_proto::value::Value;
use zodb_core::memory::MemoryStorage;
use zodb_core::{Oid, ReadStorage, Tid, TxnStatus, WriteStorage};

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    storage: Arc<MemoryStorage>,
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

fn memory_spec(storage: &Arc<MemoryStorage>) -> StorageSpec {
    let mut spec = StorageSpec::new(storage.clone(), interfaces::MEMORY_UNDO);
    let s = storage.clone();
    spec.size = Some(Arc::new(move || s.size()));
    spec
}

async fn start_with(
    config: ServerConfig,
    spec: impl FnOnce(&Arc<MemoryStorage>) -> StorageSpec,
) -> Running {
    let storage = Arc::new(MemoryStorage::new("MappingStorage"));
    let spec = spec(&storage);
    let server = Server::new(config, [("1".to_owned(), spec)]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        stop: Some(tx),
        task,
        storage,
    }
}

async fn start(config: ServerConfig) -> Running {
    start_with(config, memory_spec).await
}

async fn client(addr: SocketAddr) -> Client<TcpStream> {
    let mut c = Client::handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    c.register("1", false).await.unwrap();
    c
}

/// A ZODB record (class pickle, state pickle) holding the text `s`, so
/// that pack's garbage collection can read it.
fn data(s: &str) -> Bytes {
    let mut v = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03X".to_vec();
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v.extend_from_slice(b"q\x01.");
    Bytes::from(v)
}

fn committed(r: CommitResult) -> Tid {
    match r {
        CommitResult::Committed(t) => t,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn raised(r: Result<Value, ClientError>) -> ZeoException {
    match r {
        Err(ClientError::Raised(e)) => e,
        other => panic!("expected an exception, got {other:?}"),
    }
}

/// Waits for the next server call on `c` (an invalidation, say).
async fn next_call(c: &mut Client<TcpStream>) -> ClientCall {
    if let Some(call) = c.calls.pop_front() {
        return call;
    }
    match tokio::time::timeout(Duration::from_secs(5), c.read())
        .await
        .expect("a server call in time")
        .unwrap()
    {
        ServerMessage::Call(call) => call,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_register_load_commit_invalidate() {
    for encoding in [Encoding::Pickle, Encoding::Msgpack] {
        let srv = start(ServerConfig {
            encoding,
            ..ServerConfig::default()
        })
        .await;
        let mut a = Client::handshake(TcpStream::connect(srv.addr).await.unwrap())
            .await
            .unwrap();
        assert_eq!(a.protocol().encoding, encoding);
        assert_eq!(a.register("1", false).await.unwrap(), Tid::ZERO);
        let mut b = client(srv.addr).await;
        // Empty database: POSKeyError, echoed tuple msgid handled.
        let e = match a.load_before(Oid(0), Tid(1)).await {
            Err(ClientError::Raised(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e, ZeoException::pos_key(Oid(0)));
        let oids = a.call(&Request::NewOids { n: None }).await.unwrap();
        assert_eq!(oids.as_seq().unwrap().len(), 100);
        let t1 = committed(
            a.commit(1, &[(Oid(0), Tid::ZERO, data("root"))])
                .await
                .unwrap(),
        );
        // The committer gets `info` before the tid reply, no invalidation.
        assert!(matches!(
            a.calls.pop_front(),
            Some(ClientCall::Info { length: 1, .. })
        ));
        assert!(a.calls.is_empty());
        // The other connection is told.
        assert_eq!(
            next_call(&mut b).await,
            ClientCall::InvalidateTransaction {
                tid: t1,
                oids: vec![Oid(0)]
            }
        );
        let rev = b.load_before(Oid(0), Tid::MAX).await.unwrap().unwrap();
        assert_eq!((rev.data, rev.start, rev.end), (data("root"), t1, None));
        assert_eq!(
            b.call(&Request::LastTransaction).await.unwrap(),
            Value::tid(t1)
        );
        // An empty transaction is announced too.
        let t2 = committed(a.commit(2, &[]).await.unwrap());
        assert_eq!(
            next_call(&mut b).await,
            ClientCall::InvalidateTransaction {
                tid: t2,
                oids: vec![]
            }
        );
        let info = b.call(&Request::GetInfo).await.unwrap();
        assert_eq!(info.dict_get("name"), Some(&Value::str("MappingStorage")));
        assert_eq!(info.dict_get("supportsUndo"), Some(&Value::Bool(true)));
        assert_eq!(b.call(&Request::Ping).await.unwrap(), Value::None);
        let status = b.call(&Request::ServerStatus).await.unwrap();
        assert_eq!(status.dict_get("commits"), Some(&Value::Int(2)));
        assert_eq!(status.dict_get("connections"), Some(&Value::Int(2)));
        srv.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_go_back_to_the_client_and_resolved_stores_commit() {
    let srv = start(ServerConfig::default()).await;
    let mut a = client(srv.addr).await;
    let t1 = committed(
        a.commit(1, &[(Oid(0), Tid::ZERO, data("v1"))])
            .await
            .unwrap(),
    );
    let t2 = committed(a.commit(2, &[(Oid(0), t1, data("v2"))]).await.unwrap());
    // A store based on t1 conflicts; the vote returns the dict.
    let txn = TxnId(3);
    a.send(&Request::TpcBegin {
        txn,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Value::Dict(vec![]),
        tid: None,
        status: TxnStatus::Committed,
    })
    .await
    .unwrap();
    a.send(&Request::Storea {
        oid: Oid(0),
        serial: t1,
        data: data("stale"),
        txn,
    })
    .await
    .unwrap();
    let voted = a.call(&Request::Vote { txn }).await.unwrap();
    assert_eq!(
        VoteItem::list_from_value(&voted).unwrap(),
        vec![VoteItem::Conflict {
            oid: Oid(0),
            committed: t2,
            read: t1,
            data: data("stale"),
        }]
    );
    // The client resolves and stores on top of the committed serial, then
    // votes again: the later store clears the conflict.
    a.send(&Request::Storea {
        oid: Oid(0),
        serial: t2,
        data: data("merged"),
        txn,
    })
    .await
    .unwrap();
    let voted = a.call(&Request::Vote { txn }).await.unwrap();
    assert_eq!(VoteItem::list_from_value(&voted).unwrap(), vec![]);
    let t3 = a
        .call(&Request::TpcFinish { txn })
        .await
        .unwrap()
        .as_tid()
        .unwrap();
    assert_eq!(srv.storage.load(Oid(0)).unwrap(), (data("merged"), t3));
    // A read conflict is an exception at vote, and ends the transaction.
    let txn = TxnId(4);
    a.send(&Request::TpcBegin {
        txn,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Value::Dict(vec![]),
        tid: None,
        status: TxnStatus::Committed,
    })
    .await
    .unwrap();
    a.send(&Request::CheckCurrentSerialInTransaction {
        oid: Oid(0),
        serial: t1,
        txn,
    })
    .await
    .unwrap();
    let e = raised(a.call(&Request::Vote { txn }).await);
    assert_eq!(e.class_path(), "ZODB.POSException.ReadConflictError");
    assert_eq!(
        e.state().dict_get("serials"),
        Some(&Value::Tuple(vec![Value::tid(t3), Value::tid(t1)]))
    );
    assert_eq!(
        a.call(&Request::TpcAbort { txn }).await.unwrap(),
        Value::None
    );
    // A vote without tpc_begin.
    let e = raised(a.call(&Request::Vote { txn: TxnId(9) }).await);
    assert_eq!(e.class_path(), "ZODB.POSException.StorageTransactionError");
    srv.shutdown().await;
}

/// Starts a transaction storing `oid` and votes; returns after the vote
/// reply (or the vote's msgid, when `wait` is false).
async fn begin_store_vote(
    c: &mut Client<TcpStream>,
    txn: i64,
    oid: Oid,
    serial: Tid,
    value: &str,
    wait: bool,
) -> Option<Value> {
    let txn = TxnId(txn);
    c.send(&Request::TpcBegin {
        txn,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Value::str_dict([("k", Value::Int(1))]),
        tid: None,
        status: TxnStatus::Committed,
    })
    .await
    .unwrap();
    c.send(&Request::Storea {
        oid,
        serial,
        data: data(value),
        txn,
    })
    .await
    .unwrap();
    let msgid = c.send(&Request::Vote { txn }).await.unwrap();
    if wait {
        c.reply_to(&msgid).await.unwrap();
        None
    } else {
        Some(msgid)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_commit_releases_the_lock() {
    let srv = start(ServerConfig::default()).await;
    let mut a = client(srv.addr).await;
    let mut b = client(srv.addr).await;
    let before = srv.storage.last_transaction();
    // A votes and holds the lock.
    begin_store_vote(&mut a, 1, Oid(1), Tid::ZERO, "from a", true).await;
    // B's vote waits for it.
    let msgid = begin_store_vote(&mut b, 2, Oid(2), Tid::ZERO, "from b", false)
        .await
        .unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), b.reply_to(&msgid)).await;
    assert!(waiting.is_err(), "the second vote must wait for the lock");
    let mut c = client(srv.addr).await;
    let status = c.call(&Request::ServerStatus).await.unwrap();
    assert_eq!(status.dict_get("waiting"), Some(&Value::Int(1)));
    // A vanishes: its transaction is aborted and B gets the lock.
    drop(a);
    tokio::time::timeout(Duration::from_secs(5), b.reply_to(&msgid))
        .await
        .expect("the vote proceeds once the holder is gone")
        .unwrap();
    let tid = b
        .call(&Request::TpcFinish { txn: TxnId(2) })
        .await
        .unwrap()
        .as_tid()
        .unwrap();
    assert!(tid > before);
    assert!(srv.storage.load(Oid(1)).is_err(), "nothing of A's written");
    assert_eq!(srv.storage.load(Oid(2)).unwrap().0, data("from b"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_closes_the_holder() {
    let srv = start(ServerConfig {
        transaction_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    })
    .await;
    let mut a = client(srv.addr).await;
    let mut b = client(srv.addr).await;
    begin_store_vote(&mut a, 1, Oid(1), Tid::ZERO, "slow", true).await;
    // A never finishes: after the timeout it is closed and B can commit.
    let t = committed(
        tokio::time::timeout(
            Duration::from_secs(5),
            b.commit(2, &[(Oid(2), Tid::ZERO, data("b"))]),
        )
        .await
        .expect("B commits after A's timeout")
        .unwrap(),
    );
    // A's connection is closed. The lock is released before the close
    // reaches A's task, so B's invalidation may come first.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a.read().await {
                Err(_) => break,
                Ok(ServerMessage::Call(ClientCall::InvalidateTransaction { tid, .. })) => {
                    assert_eq!(tid, t);
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("A's connection is closed");
    assert!(srv.storage.load(Oid(1)).is_err());
    assert_eq!(srv.storage.load(Oid(2)).unwrap().1, t);
    srv.shutdown().await;
}

/// Connects, handshakes with `Z5`, registers with raw frames.
async fn raw_registered(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = [0u8; 6];
    s.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"\x00\x00\x00\x02Z5");
    s.write_all(&frame_bytes(b"Z5").unwrap()).await.unwrap();
    let reg = Request::Register {
        storage: "1".into(),
        read_only: false,
    }
    .to_message(Value::Int(1))
    .encode(Encoding::Pickle)
    .unwrap();
    s.write_all(&frame_bytes(&reg).unwrap()).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    s
}

/// Whether the server closed `s` (reads EOF or a reset within a second).
async fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_one_connection_only() {
    let srv = start(ServerConfig {
        max_frame_length: 1 << 20,
        ..ServerConfig::default()
    })
    .await;
    let mut good = client(srv.addr).await;
    let t1 = committed(
        good.commit(1, &[(Oid(0), Tid::ZERO, data("keep"))])
            .await
            .unwrap(),
    );
    let msg = |m: Message| frame_bytes(&m.encode(Encoding::Pickle).unwrap()).unwrap();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "random bytes",
            {
                let mut v = b"\x00\x00\x00\x10".to_vec();
                v.extend_from_slice(&[
                    0x9c, 0x01, 0xff, 0x13, 0x37, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                ]);
                v
            },
            true,
        ),
        (
            "4 GiB length prefix",
            b"\xff\xff\xff\xffZZZZ".to_vec(),
            true,
        ),
        ("over the frame limit", b"\x10\x00\x00\x00".to_vec(), true),
        (
            "unknown method",
            msg(Message::call(Value::Int(5), "undo", vec![Value::Int(1)])).to_vec(),
            true,
        ),
        (
            "forbidden global",
            frame_bytes(b"\x80\x03(K\x05\x89X\x04\x00\x00\x00pingcos\nsystem\n)\x85Rt.")
                .unwrap()
                .to_vec(),
            true,
        ),
        (
            "not a 4-tuple",
            frame_bytes(b"\x80\x03K\x01.").unwrap().to_vec(),
            true,
        ),
        (
            "async call that fails",
            msg(Message::async_call(
                "storea",
                vec![
                    Value::oid(Oid(1)),
                    Value::tid(Tid::ZERO),
                    Value::bytes(&b"x"[..]),
                    Value::Int(77),
                ],
            ))
            .to_vec(),
            true,
        ),
        (
            "second register",
            msg(Message::call(
                Value::Int(5),
                "register",
                vec![Value::str("1"), Value::Bool(false)],
            ))
            .to_vec(),
            true,
        ),
        (
            "wrong arity (a TypeError reply, connection kept)",
            msg(Message::call(
                Value::Int(5),
                "lastTransaction",
                vec![Value::Int(1)],
            ))
            .to_vec(),
            false,
        ),
    ];
    for (what, bytes, closes) in cases {
        let mut bad = raw_registered(srv.addr).await;
        bad.write_all(&bytes).await.unwrap();
        if closes {
            assert!(is_closed(&mut bad).await, "{what}: connection closed");
        } else {
            let mut len = [0u8; 4];
            bad.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            bad.read_exact(&mut body).await.unwrap();
            let reply = ServerMessage::decode(Encoding::Pickle, &Bytes::from(body)).unwrap();
            match reply {
                ServerMessage::Error { exception, .. } => {
                    assert_eq!(exception.class_path(), "builtins.TypeError", "{what}")
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(!is_closed(&mut bad).await, "{what}: connection kept");
        }
        // The well-behaved client is served throughout.
        let rev = good.load_before(Oid(0), Tid::MAX).await.unwrap().unwrap();
        assert_eq!((rev.data, rev.start), (data("keep"), t1), "after {what}");
    }
    // A truncated frame, then the peer goes away.
    let mut bad = raw_registered(srv.addr).await;
    bad.write_all(b"\x00\x00\x01\x00abc").await.unwrap();
    drop(bad);
    // A call before register closes.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut hello = [0u8; 6];
    s.read_exact(&mut hello).await.unwrap();
    s.write_all(&frame_bytes(b"Z5").unwrap()).await.unwrap();
    s.write_all(&msg(Message::call(Value::Int(1), "ping", vec![])))
        .await
        .unwrap();
    assert!(is_closed(&mut s).await, "call before register");
    // A bad handshake closes.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.read_exact(&mut hello).await.unwrap();
    s.write_all(&frame_bytes(b"Z4").unwrap()).await.unwrap();
    assert!(is_closed(&mut s).await, "ZEO 4 handshake");
    // Nothing committed changed; the server still commits.
    assert_eq!(srv.storage.last_transaction(), t1);
    assert_eq!(srv.storage.load(Oid(0)).unwrap(), (data("keep"), t1));
    let t2 = committed(good.commit(2, &[(Oid(0), t1, data("new"))]).await.unwrap());
    assert!(t2 > t1);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruok_answers_json_and_closes() {
    let srv = start(ServerConfig::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut hello = [0u8; 6];
    s.read_exact(&mut hello).await.unwrap();
    s.write_all(&frame_bytes(b"ruok").unwrap()).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["1"]["connections"], 0);
    assert_eq!(json["1"]["last-transaction"], "0000000000000000");
    assert_eq!(json["1"]["timeout-thread-is-alive"], "stub");
    assert!(is_closed(&mut s).await);
    srv.shutdown().await;
}

/// Loads racing with commits: a load reply that shows commit T never
/// reaches the client before T's invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_precede_the_load_replies_that_show_them() {
    let srv = start(ServerConfig::default()).await;
    let mut w = client(srv.addr).await;
    let mut serial = committed(
        w.commit(1, &[(Oid(0), Tid::ZERO, data("0"))])
            .await
            .unwrap(),
    );
    let addr = srv.addr;
    let reader = tokio::spawn(async move {
        let mut r = client(addr).await;
        let mut invalidated = Tid::ZERO;
        let mut seen = 0;
        for _ in 0..400 {
            let msgid = r
                .send(&Request::LoadBefore {
                    oid: Oid(0),
                    before: Tid::MAX,
                })
                .await
                .unwrap();
            loop {
                match r.read().await.unwrap() {
                    ServerMessage::Call(ClientCall::InvalidateTransaction { tid, .. }) => {
                        invalidated = invalidated.max(tid);
                    }
                    ServerMessage::Reply { msgid: m, result } if m.py_eq(&msgid) => {
                        let rev = zeo_proto::reply::LoadedRevision::from_value(&result)
                            .unwrap()
                            .unwrap();
                        if rev.start > Tid::ZERO && seen > 0 {
                            assert!(
                                rev.start <= invalidated,
                                "load shows {} before its invalidation (last {})",
                                rev.start,
                                invalidated
                            );
                        }
                        seen += 1;
                        if seen == 1 {
                            invalidated = invalidated.max(rev.start);
                        }
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    });
    for i in 0..100 {
        serial = committed(
            w.commit(10 + i, &[(Oid(0), serial, data(&i.to_string()))])
                .await
                .unwrap(),
        );
    }
    reader.await.unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_syncs_and_loses_nothing() {
    let syncs = Arc::new(AtomicUsize::new(0));
    let counter = syncs.clone();
    let srv = start_with(ServerConfig::default(), move |st| {
        let mut spec = memory_spec(st);
        spec.group_sync = Some(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        }));
        spec
    })
    .await;
    let mut setup = client(srv.addr).await;
    let writers = 6usize;
    let per = 40usize;
    for w in 0..writers {
        committed(
            setup
                .commit(w as i64 + 1, &[(Oid(w as u64), Tid::ZERO, data("0"))])
                .await
                .unwrap(),
        );
    }
    let before = syncs.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let addr = srv.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = client(addr).await;
            let mut serial = c
                .load_before(Oid(w as u64), Tid::MAX)
                .await
                .unwrap()
                .unwrap()
                .start;
            for i in 0..per {
                serial = committed(
                    c.commit(
                        1000 + i as i64,
                        &[(Oid(w as u64), serial, data(&i.to_string()))],
                    )
                    .await
                    .unwrap(),
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let used = syncs.load(Ordering::SeqCst) - before;
    assert!(used <= writers * per, "{used} syncs");
    for w in 0..writers {
        assert_eq!(
            srv.storage.load(Oid(w as u64)).unwrap().0,
            data(&(per - 1).to_string())
        );
    }
    let txns = srv.storage.iter_transactions(None, None).unwrap().count();
    assert_eq!(txns, writers + writers * per);
    eprintln!("{} commits, {used} group syncs", writers * per);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_iteration_pack_and_invalidation_queue() {
    let srv = start(ServerConfig {
        invalidation_queue_size: 3,
        ..ServerConfig::default()
    })
    .await;
    let mut a = client(srv.addr).await;
    let t1 = committed(
        a.commit(1, &[(Oid(0), Tid::ZERO, data("v1"))])
            .await
            .unwrap(),
    );
    let t2 = committed(a.commit(2, &[(Oid(0), t1, data("v2"))]).await.unwrap());
    let log = a
        .call(&Request::UndoLog {
            first: 0,
            last: -20,
        })
        .await
        .unwrap();
    let entries = log.as_seq().unwrap();
    assert_eq!(entries.len(), 2);
    let id = entries[0]
        .dict_get("id")
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();
    // undoInfo with a spec.
    let info = a
        .call(&Request::UndoInfo {
            first: 0,
            last: -20,
            spec: Value::str_dict([("k", Value::Int(1))]),
        })
        .await
        .unwrap();
    assert_eq!(info.as_seq().unwrap().len(), 0);
    let txn = TxnId(3);
    a.send(&Request::TpcBegin {
        txn,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Value::Dict(vec![]),
        tid: None,
        status: TxnStatus::Committed,
    })
    .await
    .unwrap();
    a.send(&Request::Undoa { undo_id: id, txn }).await.unwrap();
    let voted = a.call(&Request::Vote { txn }).await.unwrap();
    assert_eq!(
        VoteItem::list_from_value(&voted).unwrap(),
        vec![VoteItem::Resolved(Oid(0))]
    );
    let t3 = a
        .call(&Request::TpcFinish { txn })
        .await
        .unwrap()
        .as_tid()
        .unwrap();
    assert_eq!(srv.storage.load(Oid(0)).unwrap(), (data("v1"), t3));
    // Iteration.
    let iid = a
        .call(&Request::IteratorStart {
            start: None,
            stop: None,
        })
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    let mut tids = Vec::new();
    loop {
        let v = a.call(&Request::IteratorNext { iid }).await.unwrap();
        let Some(t) = zeo_proto::reply::IteratedTxn::from_value(&v).unwrap() else {
            break;
        };
        let rid = a
            .call(&Request::IteratorRecordStart {
                txn_iid: iid,
                tid: t.tid,
            })
            .await
            .unwrap()
            .as_i64()
            .unwrap();
        let r = a
            .call(&Request::IteratorRecordNext { iid: rid })
            .await
            .unwrap();
        let rec = zeo_proto::reply::IteratedRecord::from_value(&r)
            .unwrap()
            .unwrap();
        assert_eq!(rec.oid, Oid(0));
        tids.push(t.tid);
    }
    assert_eq!(tids, vec![t1, t2, t3]);
    // getInvalidations: answered from the queue when it reaches back.
    let inv = a
        .call(&Request::GetInvalidations { tid: t2 })
        .await
        .unwrap();
    assert_eq!(
        inv,
        Value::Tuple(vec![Value::tid(t3), Value::List(vec![Value::oid(Oid(0))])])
    );
    let t4 = committed(a.commit(4, &[]).await.unwrap());
    let _t5 = committed(a.commit(5, &[]).await.unwrap());
    // t1 is now older than the queue (3 entries: t5, t4, t3).
    assert_eq!(
        a.call(&Request::GetInvalidations { tid: t1 })
            .await
            .unwrap(),
        Value::None
    );
    assert!(
        a.call(&Request::GetInvalidations { tid: t4 })
            .await
            .unwrap()
            .as_seq()
            .is_some()
    );
    // Pack: history before the pack time goes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    a.call(&Request::Pack {
        time: now + 1.0,
        wait: true,
    })
    .await
    .unwrap();
    assert!(srv.storage.load_serial(Oid(0), t1).is_err());
    assert_eq!(srv.storage.load(Oid(0)).unwrap().1, t3);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_upload_and_download_in_the_bushy_layout() {
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("blobs");
    let bd = blob_dir.clone();
    let srv = start_with(ServerConfig::default(), move |st| {
        let mut spec = memory_spec(st);
        spec.blob_dir = Some(bd);
        spec
    })
    .await;
    let mut a = client(srv.addr).await;
    let txn = TxnId(1);
    a.send(&Request::TpcBegin {
        txn,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Value::Dict(vec![]),
        tid: None,
        status: TxnStatus::Committed,
    })
    .await
    .unwrap();
    let blob: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    a.send(&Request::Storea {
        oid: Oid(1),
        serial: Tid::ZERO,
        data: data("rec"),
        txn,
    })
    .await
    .unwrap();
    a.send(&Request::StoreBlobStart).await.unwrap();
    for chunk in blob.chunks(59000) {
        a.send(&Request::StoreBlobChunk {
            chunk: Bytes::copy_from_slice(chunk),
        })
        .await
        .unwrap();
    }
    a.send(&Request::StoreBlobEnd {
        oid: Oid(1),
        serial: Tid::ZERO,
        data: data("rec"),
        txn,
    })
    .await
    .unwrap();
    a.call(&Request::Vote { txn }).await.unwrap();
    let tid = a
        .call(&Request::TpcFinish { txn })
        .await
        .unwrap()
        .as_tid()
        .unwrap();
    let path = blob_dir
        .join("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01")
        .join(format!("{}.blob", zeo_proto::server::blob::id_repr(tid.0)));
    assert_eq!(std::fs::read(&path).unwrap(), blob);
    // Download.
    a.calls.clear();
    a.call(&Request::SendBlob {
        oid: Oid(1),
        serial: tid,
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut calls: Vec<ClientCall> = a.calls.drain(..).collect();
    assert!(matches!(
        calls.remove(0),
        ClientCall::ReceiveBlobStart { .. }
    ));
    assert!(matches!(
        calls.pop(),
        Some(ClientCall::ReceiveBlobStop { .. })
    ));
    for c in calls {
        match c {
            ClientCall::ReceiveBlobChunk { chunk, .. } => got.extend_from_slice(&chunk),
            ClientCall::Info { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, blob);
    let e = raised(
        a.call(&Request::SendBlob {
            oid: Oid(2),
            serial: tid,
        })
        .await,
    );
    assert_eq!(e.class_path(), "ZODB.POSException.POSKeyError");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_voted_transactions() {
    let srv = start(ServerConfig::default()).await;
    let mut a = client(srv.addr).await;
    begin_store_vote(&mut a, 1, Oid(1), Tid::ZERO, "never", true).await;
    let storage = srv.storage.clone();
    srv.shutdown().await;
    assert!(storage.load(Oid(1)).is_err());
    assert_eq!(storage.last_transaction(), Tid::ZERO);
    assert!(a.read().await.is_err(), "closed by shutdown");
    // The storage is free again: nothing holds its commit lock.
    let mut t = storage.tpc_begin(zodb_core::TxnMeta::default()).unwrap();
    t.vote().unwrap();
    t.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_server_refuses_writes() {
    let srv = start(ServerConfig {
        read_only: true,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Client::handshake(TcpStream::connect(srv.addr).await.unwrap())
        .await
        .unwrap();
    let e = raised(
        c.call(&Request::Register {
            storage: "2".into(),
            read_only: true,
        })
        .await,
    );
    assert_eq!(e.class_path(), "builtins.ValueError");
    match c.register("1", false).await {
        Err(ClientError::Raised(e)) => {
            assert_eq!(e.class_path(), "ZODB.POSException.ReadOnlyError")
        }
        other => panic!("{other:?}"),
    }
    // The client may retry read-only.
    c.register("1", true).await.unwrap();
    let e = raised(c.call(&Request::NewOids { n: Some(1) }).await);
    assert_eq!(e.class_path(), "ZODB.POSException.ReadOnlyError");
    srv.shutdown().await;
}

/// `tpc_begin` + `storea` of one object, without voting.
async fn begin_store(c: &mut Client<TcpStream>, txn: TxnId, oid: Oid, serial: Tid, data: Bytes) {
    c.send(&Request::TpcBegin {
        txn,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Value::Dict(vec![]),
        tid: None,
        status: TxnStatus::Committed,
    })
    .await
    .unwrap();
    c.send(&Request::Storea {
        oid,
        serial,
        data,
        txn,
    })
    .await
    .unwrap();
}

/// Regression: "finished called wo lock" under concurrent conflicting
/// commits (ZEO's checkConcurrentUpdates*). A vote that returns conflicts
/// for the client to resolve must keep the commit lock until the client
/// votes again: if another client could commit the same object meanwhile,
/// the second round conflicts again, and so on; ZEO's client gives up
/// after 9 rounds *without raising* and calls `tpc_finish` on a
/// transaction that never voted, which the server refuses with
/// `AssertionError('finished called wo lock')`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_round_keeps_the_commit_lock() {
    let srv = start(ServerConfig::default()).await;
    let mut a = client(srv.addr).await;
    let mut b = client(srv.addr).await;
    let mut c = client(srv.addr).await;
    let t1 = committed(
        c.commit(1, &[(Oid(0), Tid::ZERO, data("v1"))])
            .await
            .unwrap(),
    );
    let t2 = committed(c.commit(2, &[(Oid(0), t1, data("v2"))]).await.unwrap());
    // A read t1: its vote returns the conflict for it to resolve.
    let ta = TxnId(10);
    begin_store(&mut a, ta, Oid(0), t1, data("a")).await;
    let voted = a.call(&Request::Vote { txn: ta }).await.unwrap();
    assert!(matches!(
        VoteItem::list_from_value(&voted).unwrap().as_slice(),
        [VoteItem::Conflict { committed, .. }] if *committed == t2
    ));
    // While A resolves, B (which read t2) cannot commit the object.
    let tb = TxnId(20);
    begin_store(&mut b, tb, Oid(0), t2, data("b")).await;
    let b_vote = b.send(&Request::Vote { txn: tb }).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), b.reply_to(&b_vote)).await;
    assert!(
        early.is_err(),
        "B must wait while A holds the lock between rounds"
    );
    // A's second round succeeds against the state it resolved with.
    a.send(&Request::Storea {
        oid: Oid(0),
        serial: t2,
        data: data("a+v2"),
        txn: ta,
    })
    .await
    .unwrap();
    let voted = a.call(&Request::Vote { txn: ta }).await.unwrap();
    assert_eq!(VoteItem::list_from_value(&voted).unwrap(), vec![]);
    let t3 = a
        .call(&Request::TpcFinish { txn: ta })
        .await
        .unwrap()
        .as_tid()
        .unwrap();
    // Now B votes, and it is B that meets the conflict.
    let voted = tokio::time::timeout(Duration::from_secs(5), b.reply_to(&b_vote))
        .await
        .expect("B's vote proceeds after A's finish")
        .unwrap();
    assert!(matches!(
        VoteItem::list_from_value(&voted).unwrap().as_slice(),
        [VoteItem::Conflict { committed, read, .. }] if *committed == t3 && *read == t2
    ));
    assert_eq!(
        b.call(&Request::TpcAbort { txn: tb }).await.unwrap(),
        Value::None
    );
    assert_eq!(srv.storage.load(Oid(0)).unwrap(), (data("a+v2"), t3));
    srv.shutdown().await;
}

/// A `BTrees.Length` record holding `n` as ZODB writes it.
fn length(n: u8) -> Bytes {
    let mut v = b"\x80\x03cBTrees.Length\nLength\nq\x00.\x80\x03K".to_vec();
    v.extend_from_slice(&[n, b'.']);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrees_conflicts_are_resolved_on_the_server() {
    let srv = start(ServerConfig::default()).await;
    let mut a = client(srv.addr).await;
    let mut c = client(srv.addr).await;
    let t1 = committed(
        c.commit(1, &[(Oid(0), Tid::ZERO, length(5))])
            .await
            .unwrap(),
    );
    committed(c.commit(2, &[(Oid(0), t1, length(6))]).await.unwrap());
    // A read 5 and wrote 8: the server merges (6 + 8 - 5) and says so.
    let txn = TxnId(3);
    begin_store(&mut a, txn, Oid(0), t1, length(8)).await;
    let voted = a.call(&Request::Vote { txn }).await.unwrap();
    assert_eq!(
        VoteItem::list_from_value(&voted).unwrap(),
        vec![VoteItem::Resolved(Oid(0))]
    );
    let t3 = a
        .call(&Request::TpcFinish { txn })
        .await
        .unwrap()
        .as_tid()
        .unwrap();
    assert_eq!(srv.storage.load(Oid(0)).unwrap(), (length(9), t3));
    let status = a.call(&Request::ServerStatus).await.unwrap();
    assert_eq!(status.dict_get("conflicts_resolved"), Some(&Value::Int(1)));
    // With client-conflict-resolution the server leaves it to the client.
    let srv2 = start(ServerConfig {
        client_conflict_resolution: true,
        ..ServerConfig::default()
    })
    .await;
    let mut a = client(srv2.addr).await;
    let t1 = committed(
        a.commit(1, &[(Oid(0), Tid::ZERO, length(5))])
            .await
            .unwrap(),
    );
    committed(a.commit(2, &[(Oid(0), t1, length(6))]).await.unwrap());
    begin_store(&mut a, txn, Oid(0), t1, length(8)).await;
    let voted = a.call(&Request::Vote { txn }).await.unwrap();
    assert!(matches!(
        VoteItem::list_from_value(&voted).unwrap().as_slice(),
        [VoteItem::Conflict { .. }]
    ));
    srv.shutdown().await;
    srv2.shutdown().await;
}

/// Loads pipelined in one write, in both msgid forms: `(oid, tid)` (the
/// wire fast path) and an int (the general path), of small and 64 KiB+
/// records, of a revision that is not the newest, before an object
/// existed, and of a missing oid. Every reply comes back in order, byte
/// for byte what the general encoder makes of the storage's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_loads_are_answered_in_order_as_the_general_path_encodes() {
    let srv = start(ServerConfig::default()).await;
    let mut w = client(srv.addr).await;
    let big = Bytes::from(vec![b'x'; 70_000]);
    let t1 = committed(
        w.commit(
            1,
            &[
                (Oid(1), Tid::ZERO, data("one")),
                (Oid(2), Tid::ZERO, big.clone()),
            ],
        )
        .await
        .unwrap(),
    );
    let t2 = committed(w.commit(2, &[(Oid(1), t1, data("two"))]).await.unwrap());
    let mut s = raw_registered(srv.addr).await;
    let loads: Vec<(Oid, Tid)> = (0..400u64)
        .map(|i| {
            let oid = Oid(i % 4);
            let before = match i % 3 {
                0 => Tid::MAX,
                1 => t2,
                _ => t1,
            };
            (oid, before)
        })
        .collect();
    // Each of the twelve (oid, before) pairs in both forms.
    let msgid = |i: usize, oid: Oid, before: Tid| {
        if (i / 12).is_multiple_of(2) {
            Request::load_before_msgid(oid, before)
        } else {
            Value::Int(1000 + i as i128)
        }
    };
    let mut out = Vec::new();
    for (i, &(oid, before)) in loads.iter().enumerate() {
        let call = Request::LoadBefore { oid, before }
            .to_message(msgid(i, oid, before))
            .encode(Encoding::Pickle)
            .unwrap();
        out.extend_from_slice(&frame_bytes(&call).unwrap());
    }
    s.write_all(&out).await.unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for (i, &(oid, before)) in loads.iter().enumerate() {
        let msgid = msgid(i, oid, before);
        let expected = match srv.storage.load_before(oid, before) {
            Ok(rev) => {
                let rev = rev.map(|r| zeo_proto::reply::LoadedRevision {
                    data: r.data,
                    start: r.serial,
                    end: r.next_serial,
                });
                let kind = match &rev {
                    None => "none",
                    Some(r) if r.data.len() > 65_536 => "big",
                    Some(r) if r.end.is_some() => "old",
                    Some(_) => "current",
                };
                kinds.insert((msgid.as_i64().is_none(), kind));
                ServerMessage::Reply {
                    msgid,
                    result: zeo_proto::reply::LoadedRevision::to_value(rev.as_ref()),
                }
            }
            Err(e) => {
                kinds.insert((msgid.as_i64().is_none(), "missing"));
                ServerMessage::Error {
                    msgid,
                    exception: ZeoException::from_storage_error(&e),
                }
            }
        }
        .encode(Encoding::Pickle)
        .unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(body, expected, "reply {i} to loadBefore({oid}, {before})");
    }
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    srv.shutdown().await;
}
