//! A whole Data.fs image from arbitrary bytes: opening it (the index
//! rebuild scan) and every read on what opened must not panic or hang.

#![no_main]

use bytes::Bytes;
use filestorage::backend::MemBackend;
use filestorage::{DataFile, FileStorage, OpenOptions};
use libfuzzer_sys::fuzz_target;
use zodb_core::{ReadStorage, Tid};

fuzz_target!(|data: &[u8]| {
    // Most inputs lack a magic; give half of them one so the scan runs.
    let mut image = Vec::with_capacity(data.len() + 4);
    if data.first().is_some_and(|b| b & 1 == 1) {
        image.extend_from_slice(b"FS30");
    }
    image.extend_from_slice(data);
    let file = DataFile::from_backend(
        "fuzz.fs",
        std::sync::Arc::new(MemBackend(Bytes::from(image))),
    );
    let opts = OpenOptions {
        use_index: false,
        ..OpenOptions::default()
    };
    let Ok(fs) = FileStorage::open_file(file, &opts, &mut |_, _| {}) else {
        return;
    };
    for (oid, _) in fs.oids().into_iter().take(32) {
        let _ = fs.load(oid);
        let _ = fs.load_before(oid, Tid(1 << 56));
        let _ = fs.history(oid, 4);
    }
    if let Ok(it) = fs.iter_transactions(None, None) {
        it.take(32).for_each(drop);
    }
    fs.txns_rev().take(8).for_each(drop);
});
