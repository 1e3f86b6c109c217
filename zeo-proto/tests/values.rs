//! The encoders against Python's, value by value: `values.jsonl` holds
//! values at every encoding boundary (int widths, 255/256-byte strings,
//! batches of 1000 list items and dict pairs, sets, non-BMP text) as ZEO's
//! marshal pickles them and as msgpack packs them (capture.py `values`).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests may panic"
)]

mod common;

use common::{tj, transcript, unhex};
use zeo_proto::encoding::{Encoding, GlobalPolicy};

#[test]
fn pickle_and_msgpack_bytes_equal_pythons() {
    let lines = transcript("values.jsonl");
    assert!(lines.len() > 70);
    for line in lines {
        let z = unhex(line["z"].as_str().unwrap());
        let v = Encoding::Pickle
            .decode(&z, GlobalPolicy::FromClient)
            .unwrap();
        assert_eq!(tj(&v), line["py"], "decoded value of {line}");
        assert_eq!(Encoding::Pickle.encode(&v).unwrap(), z, "pickle of {:?}", v);
        match line["m"].as_str() {
            Some(m) => {
                let m = unhex(m);
                assert_eq!(Encoding::Msgpack.encode(&v).unwrap(), m, "msgpack of {v:?}");
                let back = Encoding::Msgpack
                    .decode(&m, GlobalPolicy::FromClient)
                    .unwrap();
                assert_eq!(Encoding::Msgpack.encode(&back).unwrap(), m);
            }
            // Python's packer refuses it (sets, ints beyond 64 bits): so do we.
            None => assert!(Encoding::Msgpack.encode(&v).is_err(), "{v:?}"),
        }
    }
}
