//! Loading and decoding one object through a snapshot, with errors that
//! name the object.

use zodb_core::pickle::{Record, decode_record};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, ReadStorage, Tid};

use crate::error::{Error, Result};

/// One object as loaded: its decoded record, serial and pickle size.
pub(crate) struct Loaded {
    pub record: Record,
    pub serial: Tid,
    pub size: u64,
}

/// Loads `oid` as of the snapshot and decodes its record.
pub(crate) fn load<S: ReadStorage + ?Sized>(snap: &Snapshot<'_, S>, oid: Oid) -> Result<Loaded> {
    let (data, serial) = snap
        .load(oid)
        .map_err(|source| Error::Load { oid, source })?;
    let record = decode_record(&data).map_err(|source| Error::Pickle { oid, source })?;
    Ok(Loaded {
        record,
        serial,
        size: data.len() as u64,
    })
}

/// Another handle on the same snapshot. `Snapshot` derives `Copy` only
/// when the storage type itself is `Copy`, which storages are not.
pub(crate) fn same<'s, S: ReadStorage + ?Sized>(snap: &Snapshot<'s, S>) -> Snapshot<'s, S> {
    Snapshot::at(snap.storage(), snap.tid())
}
