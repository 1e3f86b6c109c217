//! `zodbrs array info`, `export` and `import`: a wendelin.core
//! ZBigArray's geometry and storage, its contents as a NumPy `.npy` file
//! that `numpy.load` reads equal to what `A[:]` gives in Python, and a
//! `.npy` file stored as a new ZBigArray.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use bytes::Bytes;
use zblk::array::{ZBigArray, shape_repr};
use zblk::dtype::{ByteOrder, DType};
use zblk::format::{BlockFormat, Order};
use zblk::write::{ArraySpec, DEFAULT_BLKSIZE, WriteFormat, Writer, WriterOptions};
use zodb_core::{Oid, ReadStorage, Tid, TxnMeta, WriteStorage};

use crate::ToolError;
use crate::tools::bigfile::snapshot;

/// `little-endian`, `big-endian`, `not applicable` or `mixed`: the byte
/// orders of the dtype's leaf types (`|` ones do not count).
fn byte_order(dt: &DType) -> &'static str {
    let mut seen = (false, false);
    let mut todo = vec![dt];
    while let Some(d) = todo.pop() {
        if let Some(fields) = &d.fields {
            todo.extend(fields.iter().map(|f| &f.dtype));
        } else if let Some(sub) = &d.subarray {
            todo.push(&sub.base);
        } else {
            match d.byteorder {
                ByteOrder::Little | ByteOrder::Native => seen.0 = true,
                ByteOrder::Big => seen.1 = true,
                ByteOrder::NotApplicable => {}
            }
        }
    }
    match seen {
        (false, false) => "not applicable",
        (true, false) => "little-endian",
        (false, true) => "big-endian",
        (true, true) => "mixed",
    }
}

/// Prints ZBigArray `oid` as of `at`: geometry, dtype, and how its file
/// is stored (loads every block once, to count formats and bytes).
pub fn info(
    stor: &dyn ReadStorage,
    oid: Oid,
    at: Option<Tid>,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    let snap = snapshot(stor, at);
    let tid = snap.tid();
    let a = ZBigArray::open(snap, oid)?;
    let file = a.file();
    let st = file.stats()?;
    let descr = a
        .npy_header()
        .map(|h| h.descr.to_python())
        .unwrap_or_else(|_| format!("'{}'", a.dtype().numpy_str()));
    let order = match a.state().order {
        Some(o) => o.as_char().to_string(),
        None => "C (no _order: saved before wendelin.core 0.6)".into(),
    };
    writeln!(
        out,
        "array      {oid} (wendelin.bigarray.array_zodb.ZBigArray)"
    )?;
    writeln!(out, "as of      {tid} (serial {})", a.serial())?;
    writeln!(out, "shape      {}", shape_repr(a.shape()))?;
    writeln!(out, "dtype      {descr}")?;
    if a.view_dtype() != a.dtype() {
        writeln!(out, "element    {} (subarray dtype)", a.dtype().numpy_str())?;
    }
    writeln!(out, "byteorder  {}", byte_order(a.dtype()))?;
    writeln!(out, "order      {order}")?;
    writeln!(out, "strides    {}", shape_repr(a.strides()))?;
    writeln!(out, "itemsize   {}", a.itemsize())?;
    writeln!(out, "nbytes     {}", a.nbytes())?;
    writeln!(out, "zfile      {} (serial {})", file.oid(), file.serial())?;
    writeln!(out, "blksize    {}", file.blksize())?;
    writeln!(out, "file size  {} ({} blocks)", file.size()?, st.nblocks)?;
    let formats: Vec<String> = BlockFormat::ALL
        .iter()
        .map(|&f| format!("{} {}", f.class_name(), st.count(f)))
        .collect();
    writeln!(
        out,
        "blocks     {} stored ({}), {} holes",
        st.stored(),
        formats.join(", "),
        st.nblocks - st.stored()
    )?;
    writeln!(
        out,
        "stored     {} bytes of block data in {} bytes of records ({} objects)",
        st.data_bytes,
        st.block_record_bytes + st.table_record_bytes,
        st.objects
    )?;
    Ok(())
}

/// Writes ZBigArray `oid` as of `at` to `out` as a `.npy` file (`-`:
/// stdout), streamed; returns the bytes written. A partly written file is
/// removed on error.
pub fn export(
    stor: &dyn ReadStorage,
    oid: Oid,
    at: Option<Tid>,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, ToolError> {
    let a = ZBigArray::open(snapshot(stor, at), oid)?;
    let total = a.nbytes();
    if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
        let n = a.write_npy(&mut w, &mut |done| progress(done, total))?;
        w.flush()?;
        return Ok(n);
    }
    let f = std::fs::File::create(out).map_err(|e| ToolError::io(out, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let written = a
        .write_npy(&mut w, &mut |done| progress(done, total))
        .map_err(ToolError::from)
        .and_then(|n| {
            w.flush().map_err(|e| ToolError::io(out, e))?;
            Ok(n)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(out);
    }
    written
}

/// How `zodbrs array import` stores the array.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// `root[key]` receives the array; the key must be new.
    pub key: String,
    /// Block size of its ZBigFile (wendelin's default: 2 MiB).
    pub blksize: u64,
    /// Block format.
    pub format: WriteFormat,
    /// A transaction is committed once this many bytes of blocks are
    /// pending: memory stays near twice this whatever the array's size.
    pub txn_bytes: u64,
}

impl ImportOptions {
    /// Defaults for `key`: 2 MiB blocks, ZBlk0, 64 MiB transactions.
    pub fn new(key: &str) -> ImportOptions {
        ImportOptions {
            key: key.to_owned(),
            blksize: DEFAULT_BLKSIZE,
            format: WriteFormat::ZBlk0,
            txn_bytes: DEFAULT_TXN_BYTES,
        }
    }
}

/// Bytes of block data per transaction for imports and conversions.
pub const DEFAULT_TXN_BYTES: u64 = 64 << 20;

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// The new ZBigArray.
    pub oid: Oid,
    /// Its ZBigFile.
    pub file: Oid,
    /// Blocks stored.
    pub blocks: u64,
    /// All-zero blocks left as holes (they read as zeros).
    pub holes: u64,
    /// Transactions committed (the first creates the array).
    pub transactions: u64,
    /// Bytes of array data read from the `.npy`.
    pub bytes: u64,
}

/// `zodbrs array import`: stores a `.npy` file as a ZBigArray under
/// `root[key]`, as `root[key] = ZBigArray(shape, dtype, order, blksize)`
/// followed by writes of its data would in Python. The dtype is what
/// `numpy.load` makes of the header's descr, the order the header's
/// (`fortran_order`), so the array's bytes are the file's data section
/// as is. The first transaction creates the array; then the data is
/// streamed block by block and committed every
/// [`ImportOptions::txn_bytes`], so arrays larger than memory import.
/// All-zero blocks are not stored (holes read as zeros, as they would
/// have been). `progress` gets (bytes read, total).
pub fn import<S: WriteStorage + ?Sized>(
    stor: &S,
    npy: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ImportReport, ToolError> {
    let f = std::fs::File::open(npy).map_err(|e| ToolError::io(npy, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let (header, _) = zblk::npy::read_header(&mut r)?;
    let dtype = DType::from_descr(&header.descr)
        .map_err(|e| ToolError::Usage(format!("{}: dtype: {e}", npy.display())))?;
    let order = if header.fortran_order {
        Order::F
    } else {
        Order::C
    };
    let nbytes = header
        .shape
        .iter()
        .try_fold(dtype.itemsize(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| ToolError::Usage(format!("{}: shape overflows", npy.display())))?;
    let mut w = Writer::open(stor, WriterOptions::default(), None)?;
    let meta = || TxnMeta {
        description: Bytes::from(format!(
            "zodbrs array import {} as root[{:?}]",
            npy.display(),
            opts.key
        )),
        ..TxnMeta::default()
    };
    let a = w.create_array(
        &opts.key,
        ArraySpec {
            dtype,
            shape: header.shape.clone(),
            order,
            blksize: opts.blksize,
        },
    )?;
    let file = w.array_file(a)?;
    let mut report = ImportReport {
        oid: Oid(0),
        file: Oid(0),
        blocks: 0,
        holes: 0,
        transactions: 0,
        bytes: 0,
    };
    w.commit(meta())?;
    report.transactions += 1;
    let bs = usize::try_from(opts.blksize)
        .map_err(|_| ToolError::Usage("blksize does not fit memory".into()))?;
    let mut pending = 0u64;
    let mut blk = 0u64;
    while report.bytes < nbytes {
        let n = (nbytes - report.bytes).min(opts.blksize) as usize;
        let mut block = vec![0u8; n];
        r.read_exact(&mut block)
            .map_err(|e| ToolError::io(npy, e))?;
        report.bytes += n as u64;
        if block.iter().all(|&b| b == 0) {
            report.holes += 1;
        } else {
            debug_assert!(block.len() <= bs);
            w.store_block_bytes(file, blk, Bytes::from(block), opts.format)?;
            report.blocks += 1;
            pending += n as u64;
        }
        blk += 1;
        if pending >= opts.txn_bytes {
            w.commit(meta())?;
            report.transactions += 1;
            pending = 0;
        }
        progress(report.bytes, nbytes);
    }
    if w.commit(meta())?.is_some() {
        report.transactions += 1;
    }
    report.oid = w.oid_of(a).unwrap_or(Oid(0));
    report.file = w.oid_of(file).unwrap_or(Oid(0));
    Ok(report)
}
