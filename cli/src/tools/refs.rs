//! ZODB's `get_refs`: the references of a record with the class each one
//! caches, as the tools that explain references (fsrefs, fsoids) need them.

use zodb_core::Oid;
use zodb_core::pickle::{Node, PersistentRef, Record};

/// Every ordinary reference of the record, in order of appearance, with the
/// class it names when that is an old-style `(module, name)` tuple.
///
/// ZODB computes this with `noload`, which does not resolve GLOBALs: a
/// reference caching its class as a GLOBAL (the normal case) therefore
/// reports no class, and tools print `<unknown>` or look it up elsewhere.
/// Weak and cross-database references are skipped, as in ZODB.
pub fn get_refs(rec: &Record) -> Vec<(Oid, Option<String>)> {
    let g = &rec.graph;
    g.nodes()
        .iter()
        .filter_map(|n| match n {
            Node::PersistentId(pid) => Some(*pid),
            _ => None,
        })
        .filter_map(|pid| match PersistentRef::from_pid(g.value(pid)).ok()? {
            PersistentRef::Oid { oid, class } => {
                let class = class.and_then(|c| {
                    let t = c.as_tuple().filter(|t| t.len() == 2)?;
                    Some(format!("{}.{}", t.get(0)?.as_text()?, t.get(1)?.as_text()?))
                });
                Some((oid, class))
            }
            PersistentRef::Weak { .. } | PersistentRef::Multi { .. } => None,
        })
        .collect()
}

/// ZODB's `oid_repr`: `0x` and the hex digits without leading zero bytes'
/// digits, padded to an even count (`0x00` for oid 0).
pub fn oid_repr(oid: Oid) -> String {
    let hex = format!("{:x}", oid.0);
    let hex = if oid.0 == 0 {
        "00".to_owned()
    } else if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    format!("0x{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_repr_like_zodb() {
        assert_eq!(oid_repr(Oid(0)), "0x00");
        assert_eq!(oid_repr(Oid(1)), "0x01");
        assert_eq!(oid_repr(Oid(0x123)), "0x0123");
        assert_eq!(oid_repr(Oid(0xabcd)), "0xabcd");
    }
}
