//! `.index` files from arbitrary bytes must parse or fail, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = filestorage::index_file::parse(&bytes::Bytes::copy_from_slice(data));
});
