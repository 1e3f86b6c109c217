//! One module per tool; each writes what the Python tool prints.

pub mod analyze;
pub mod array;
pub mod bigfile;
pub mod catobj;
pub mod copy;
pub mod demo;
pub mod fsdump;
pub mod fsdumpv;
pub mod fsoids;
pub mod fsrefs;
pub mod fstail;
pub mod fstest;
pub mod info;
pub mod pack;
pub mod progress;
pub mod qq;
pub mod refs;
pub mod reindex;
pub mod restore;
pub mod zblk;
pub mod zodbdump;
