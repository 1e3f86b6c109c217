//! `catobj`: the data of objects as of a transaction (the Go zodbtools'
//! `zodb catobj`; Python zodbtools has no such command).
//!
//! Each object is printed as `zodb dump` prints a record, with its header:
//! `obj <oid> <size> sha1:<hex>` then LF, the data and LF; with
//! `--hashonly` the header ends in ` -` and the data is left out; with
//! `--raw` only the data is written, and only one object may be asked for.
//!
//! An object is named `OID` (its current revision) or `OID@TID` (the
//! revision current as of transaction TID, TID itself included); the Go
//! tool's `TID:OID` spelling is accepted too. OID is hex as zodbtools prints
//! it (`0000000000000001`, `1`, `0x1`); TID is a `<tid>` as in `<tidrange>`:
//! 16 hex digits or a time.

use std::io::Write;

use sha1::{Digest, Sha1};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, StorageError, Tid};

use crate::ToolError;
use crate::tidrange::parse_tid_local;

/// An object address: an oid, optionally pinned to a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xid {
    /// The object.
    pub oid: Oid,
    /// Read the revision current as of this tid (inclusive); `None`: the
    /// latest.
    pub at: Option<Tid>,
}

/// Parses `OID`, `OID@TID` or `TID:OID`.
pub fn parse_xid(text: &str) -> Result<Xid, ToolError> {
    let oid = |s: &str| {
        s.parse::<Oid>()
            .map_err(|e| ToolError::Usage(format!("xid {text:?}: {e}")))
    };
    let tid =
        |s: &str| parse_tid_local(s).map_err(|e| ToolError::Usage(format!("xid {text:?}: {e}")));
    if let Some((o, t)) = text.split_once('@') {
        return Ok(Xid {
            oid: oid(o)?,
            at: Some(tid(t)?),
        });
    }
    if let Some((t, o)) = text.split_once(':') {
        return Ok(Xid {
            oid: oid(o)?,
            at: Some(tid(t)?),
        });
    }
    Ok(Xid {
        oid: oid(text)?,
        at: None,
    })
}

/// How objects are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatMode {
    /// Header, data, LF (the default).
    #[default]
    Dump,
    /// Header ending in ` -`, no data.
    HashOnly,
    /// The data alone (one object).
    Raw,
}

/// The data of `xid`'s object in `stor`: `NoSuchObject` when it did not
/// exist yet at that point, `NoData` when it was deleted.
pub fn load_xid(stor: &dyn ReadStorage, xid: Xid) -> Result<bytes::Bytes, StorageError> {
    match xid.at {
        Some(at) => Ok(Snapshot::at(stor, at).load(xid.oid)?.0),
        None => Ok(stor.load(xid.oid)?.0),
    }
}

/// Prints the objects `xids` of `stor` to `out` in `mode`. Stops at the
/// first object that cannot be loaded, after printing those before it.
pub fn catobj(
    stor: &dyn ReadStorage,
    xids: &[Xid],
    mode: CatMode,
    out: &mut dyn Write,
) -> Result<(), ToolError> {
    if mode == CatMode::Raw && xids.len() > 1 {
        return Err(ToolError::Usage("only 1 object allowed with --raw".into()));
    }
    for &xid in xids {
        let data = load_xid(stor, xid)?;
        if mode == CatMode::Raw {
            out.write_all(&data)?;
            continue;
        }
        let sha = hex::encode(Sha1::digest(&data));
        write!(out, "obj {} {} sha1:{sha}", xid.oid, data.len())?;
        if mode == CatMode::HashOnly {
            out.write_all(b" -\n")?;
        } else {
            out.write_all(b"\n")?;
            out.write_all(&data)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids() {
        let t: Tid = "0285cbac258bf266".parse().unwrap();
        assert_eq!(
            parse_xid("1").unwrap(),
            Xid {
                oid: Oid(1),
                at: None
            }
        );
        assert_eq!(
            parse_xid("0x1a").unwrap(),
            Xid {
                oid: Oid(0x1a),
                at: None
            }
        );
        assert_eq!(
            parse_xid("0000000000000001@0285cbac258bf266").unwrap(),
            Xid {
                oid: Oid(1),
                at: Some(t)
            }
        );
        assert_eq!(
            parse_xid("0285cbac258bf266:0000000000000001").unwrap(),
            Xid {
                oid: Oid(1),
                at: Some(t)
            }
        );
        assert!(matches!(parse_xid("zz"), Err(ToolError::Usage(_))));
        assert!(matches!(parse_xid("1@"), Err(ToolError::Usage(_))));
    }
}
