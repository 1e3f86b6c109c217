//! End-to-end tests: one binary, a module per area (object-style).

mod fs_crash;
mod fs_pack;
mod fs_read;
mod fs_write;
mod storage_parity;
