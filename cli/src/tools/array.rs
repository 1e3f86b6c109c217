//! `zodbrs array info` and `zodbrs array export`: a wendelin.core
//! ZBigArray's geometry and storage, and its contents as a NumPy `.npy`
//! file that `numpy.load` reads equal to what `A[:]` gives in Python.

use std::io::{BufWriter, Write};
use std::path::Path;

use zblk::array::{ZBigArray, shape_repr};
use zblk::dtype::{ByteOrder, DType};
use zblk::format::BlockFormat;
use zodb_core::{Oid, ReadStorage, Tid};

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
