//! `fsdump`: one line per transaction and per data record (ZODB's
//! `FileStorage.fsdump.fsdump`).

use std::io::Write;

use filestorage::FileStorage;
use zodb_core::pickle::class_name;

use crate::ToolError;
use crate::pyrepr::{self, Flavor};

/// Writes the dump of `fs` to `out`. Python 2's fsdump printed no `size=`
/// on transaction lines; [`Flavor::Py2`] reproduces that too.
pub fn fsdump(
    fs: &FileStorage,
    flavor: Flavor,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ToolError> {
    for (i, txn) in fs.txns().enumerate() {
        let txn = txn?;
        progress(txn.pos);
        let h = &txn.header;
        match flavor {
            Flavor::Py3 => writeln!(
                out,
                "Trans #{i:05} tid={} size={} time={} offset={}",
                h.tid,
                h.tlen,
                h.tid.timestamp(),
                txn.data_pos()
            )?,
            Flavor::Py2 => writeln!(
                out,
                "Trans #{i:05} tid={} time={} offset={}",
                h.tid,
                h.tid.timestamp(),
                txn.data_pos()
            )?,
        }
        writeln!(
            out,
            "    status={} user={} description={}",
            pyrepr::str_char(h.status),
            pyrepr::bytes(&txn.user, flavor),
            pyrepr::bytes(&txn.description, flavor)
        )?;
        for (j, rec) in fs.data_records(&txn).enumerate() {
            let rec = fs.resolve_record(&rec?)?;
            let (size, class) = match &rec.data {
                None => (String::new(), "undo or abort of object creation".to_owned()),
                Some(d) => {
                    let (m, c) = class_name(d);
                    (format!(" size={}", d.len()), format!("{m}.{c}"))
                }
            };
            let bp = rec.data_txn.map(|t| format!(" bp={t}")).unwrap_or_default();
            writeln!(
                out,
                "  data #{j:05} oid={}{size} class={class}{bp}",
                rec.oid
            )?;
        }
    }
    Ok(())
}
