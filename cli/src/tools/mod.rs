//! One module per tool; each writes what the Python tool prints.

pub mod analyze;
pub mod catobj;
pub mod fsdump;
pub mod fsdumpv;
pub mod fsoids;
pub mod fsrefs;
pub mod fstail;
pub mod fstest;
pub mod info;
pub mod progress;
pub mod qq;
pub mod refs;
pub mod reindex;
pub mod zodbdump;
