//! Many threads read one storage at once: `FileStorage` is `Sync` and its
//! reads take no lock, so every thread sees exactly what one thread sees.

use std::path::Path;
use std::sync::Arc;

use filestorage::FileStorage;
use zodb_core::{ReadStorage, Tid};

#[test]
fn parallel_readers_agree_with_a_single_reader() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/history/Data.fs");
    let fs = Arc::new(FileStorage::open_read_only(&path).unwrap());
    let oids: Vec<_> = fs.oids().into_iter().map(|(o, _)| o).collect();
    let at = Tid(fs.last_transaction().0 - (1 << 32));
    let expect: Vec<_> = oids
        .iter()
        .map(|&o| {
            (
                fs.load(o).map_err(|e| e.to_string()),
                fs.load_before(o, at).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let expect = Arc::new(expect);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (fs, oids, expect) = (fs.clone(), oids.clone(), expect.clone());
            std::thread::spawn(move || {
                for round in 0..20 {
                    // Each thread walks the oids in its own order.
                    let n = oids.len();
                    for k in 0..n {
                        let i = (k * (2 * t + 1) + round) % n;
                        let o = oids[i];
                        let got = (
                            fs.load(o).map_err(|e| e.to_string()),
                            fs.load_before(o, at).map_err(|e| e.to_string()),
                        );
                        assert_eq!(got, expect[i], "thread {t} oid {o}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
