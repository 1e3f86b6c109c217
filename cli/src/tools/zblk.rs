//! `zodbrs zblk convert`: rewrites the blocks of a wendelin.core ZBigFile
//! in the other block format (a migration: ZBlk0 blocks are one record per
//! block, ZBlk1 blocks a tree of 4 KiB chunks), content unchanged.

use zblk::format::BlockFormat;
use zblk::write::{Writer, WriterOptions};
use zodb_core::{Oid, TxnMeta, WriteStorage};

use crate::ToolError;

/// What a conversion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertReport {
    /// The ZBigFile converted.
    pub file: Oid,
    /// Stored blocks of the file.
    pub blocks: u64,
    /// Blocks rewritten (the others were already in the target format).
    pub converted: u64,
    /// Transactions committed.
    pub transactions: u64,
}

/// Rewrites every block of the ZBigFile `oid` (or of the ZBigArray `oid`'s
/// file) that is not stored as `to`, in ascending order, as wendelin's
/// `storeblk` does with that format: a new ZBlk0 or ZBlk1 object replaces
/// the old one in the block table, and the bytes stay the same. Commits
/// every `txn_bytes` of block size, so memory stays bounded; an
/// interrupted conversion leaves a file of mixed formats, which reads the
/// same and can be converted again. `progress` gets (bytes of blocks
/// looked at, bytes of all stored blocks).
pub fn convert<S: WriteStorage + ?Sized>(
    stor: &S,
    oid: Oid,
    to: BlockFormat,
    txn_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ConvertReport, ToolError> {
    let mut w = Writer::open(stor, WriterOptions::default(), None)?;
    let f = w.open_file_or_array(oid)?;
    let blksize = w.blksize(f)?;
    let blocks = w.blocks(f)?;
    let per_txn = (txn_bytes / blksize).max(1);
    let meta = || TxnMeta {
        description: format!("zodbrs zblk convert {oid} --to {}", to.class_name())
            .into_bytes()
            .into(),
        ..TxnMeta::default()
    };
    let mut report = ConvertReport {
        file: w.oid_of(f).unwrap_or(oid),
        blocks: blocks.len() as u64,
        ..ConvertReport::default()
    };
    let mut pending = 0u64;
    for (i, &(blk, _)) in blocks.iter().enumerate() {
        // Legacy `ZBlk` blocks count as another format than ZBlk0: they
        // are rewritten as ZBlk0 (`convert_block` looks at the record).
        if w.convert_block(f, blk, to)? {
            report.converted += 1;
            pending += 1;
        }
        if pending >= per_txn {
            w.commit(meta())?;
            report.transactions += 1;
            pending = 0;
        }
        progress(
            (i as u64 + 1).saturating_mul(blksize),
            (blocks.len() as u64).saturating_mul(blksize),
        );
    }
    if w.commit(meta())?.is_some() {
        report.transactions += 1;
    }
    Ok(report)
}
