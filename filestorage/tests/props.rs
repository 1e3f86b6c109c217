//! Property tests: no input makes the read side panic. Arbitrary bytes and
//! randomly damaged real databases either open (and then every read
//! answers or fails cleanly) or fail with an error.

use std::path::Path;

use bytes::Bytes;
use filestorage::backend::MemBackend;
use filestorage::{DataFile, FileStorage, OpenOptions};
use proptest::prelude::*;
use zodb_core::{Oid, ReadStorage, Tid};

fn exercise(bytes: Vec<u8>) {
    let file = DataFile::from_backend(
        "mem.fs",
        std::sync::Arc::new(MemBackend(Bytes::from(bytes))),
    );
    let opts = OpenOptions {
        use_index: false,
        ..OpenOptions::default()
    };
    let Ok(fs) = FileStorage::open_file(file, &opts, &mut |_, _| {}) else {
        return;
    };
    for (oid, _) in fs.oids().into_iter().take(64) {
        let _ = fs.load(oid);
        let _ = fs.load_before(oid, Tid(0x0300_0000_0000_0000));
        let _ = fs.load_serial(oid, Tid(1));
        let _ = fs.history(oid, 8);
    }
    let _ = fs.load(Oid(u64::MAX));
    if let Ok(it) = fs.iter_transactions(None, None) {
        for t in it.take(64) {
            let _ = t;
        }
    }
    for t in fs.txns_rev().take(8) {
        let _ = t;
    }
}

fn fixture() -> Vec<u8> {
    // Our own fixture: always present, so this runs without ../shared too.
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/packed/Data.fs");
    std::fs::read(p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2048), magic in prop_oneof![Just(b"FS30"), Just(b"FS21"), Just(b"XXXX")]) {
        let mut b = magic.to_vec();
        b.extend(tail);
        exercise(b);
    }

    #[test]
    fn damaged_databases_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                     cut in any::<prop::sample::Index>(), truncate: bool) {
        let mut b = fixture();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] = v;
        }
        if truncate {
            let at = cut.index(b.len());
            b.truncate(at);
        }
        exercise(b);
    }

    #[test]
    fn index_files_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = filestorage::index_file::parse(&Bytes::from(b));
    }

    #[test]
    fn damaged_index_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/packed/Data.fs.index");
        let mut b = std::fs::read(p).unwrap();
        for (i, v) in flips {
            let at = i.index(b.len());
            b[at] = v;
        }
        let _ = filestorage::index_file::parse(&Bytes::from(b));
    }
}
