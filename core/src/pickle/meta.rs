//! ZODB's `get_pickle_metadata`: the module and class name of a record, as
//! fsdump, fstail, fsstats and fsrefs print them.

use bytes::Bytes;

use super::decode::Decoder;
use super::ops::{self, Reader};
use super::value::{Node, Value};

/// `(module, class)` of a data record, computed as ZODB's
/// `utils.get_pickle_metadata` does:
///
/// - after an optional PROTO, a pickle starting with GLOBAL (`c`) or
///   MARK GLOBAL (`(c`) is split at its first two newlines, without decoding;
/// - otherwise the class pickle is decoded: `((module, name), args)` gives
///   module and name; `(class, args)` gives the class's module and name; any
///   other value gives its repr and `""`; a pickle that does not load gives
///   `("", "")`.
///
/// Python differs in cases where it can only raise or where it imports the
/// class: for empty data, a fast path without two newlines or with
/// non-UTF-8 names, or a malformed tuple, Python raises and this returns
/// `("", "")`; for `(class, args)` Python returns the class object and the
/// args (printed as `<class 'module.name'>.args`), this returns the names;
/// a class Python cannot import makes it return `("", "")`.
pub fn class_name(data: &[u8]) -> (String, String) {
    let empty = || (String::new(), String::new());
    let data = match data.first() {
        None => return empty(),
        Some(0x80) => data.get(2..).unwrap_or_default(),
        Some(_) => data,
    };
    let prefix = if data.starts_with(b"(c") {
        2
    } else if data.starts_with(b"c") {
        1
    } else {
        0
    };
    if prefix > 0 {
        let mut parts = data.splitn(3, |&b| b == b'\n');
        let (Some(module), Some(name), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return empty();
        };
        let module = module.get(prefix..).unwrap_or_default();
        return match (std::str::from_utf8(module), std::str::from_utf8(name)) {
            (Ok(m), Ok(n)) => (m.to_owned(), n.to_owned()),
            _ => empty(),
        };
    }
    slow_path(data).unwrap_or_else(empty)
}

fn slow_path(data: &[u8]) -> Option<(String, String)> {
    // Decode only the class pickle: find its end first, so a large state
    // pickle is never copied.
    let mut reader = Reader::new(data, 0);
    while reader.next_op().ok()?.info.code != ops::STOP {}
    let mut decoder = Decoder::new(Bytes::copy_from_slice(data.get(..reader.pos())?));
    let root = decoder.load().ok()?;
    let graph = decoder.graph();
    // ZODB's plain Unpickler has no persistent_load: a persistent id fails.
    if graph
        .nodes()
        .iter()
        .any(|n| matches!(n, Node::PersistentId(_)))
    {
        return None;
    }
    let info = graph.value(root);
    let Some(t) = info.as_tuple() else {
        return Some((repr(info), String::new()));
    };
    let first = t.get(0)?;
    if let Some(pair) = first.as_tuple() {
        let (module, name) = two(pair.iter())?;
        return Some((text_or_repr(module), text_or_repr(name)));
    }
    let (class, args) = two(t.iter())?;
    Some(match class.as_global() {
        Some((module, name)) => (module.to_owned(), name.to_owned()),
        None => (repr(class), repr(args)),
    })
}

fn two<'g>(mut it: impl Iterator<Item = Value<'g>>) -> Option<(Value<'g>, Value<'g>)> {
    let pair = (it.next()?, it.next()?);
    it.next().is_none().then_some(pair)
}

fn text_or_repr(v: Value<'_>) -> String {
    v.as_text().map_or_else(|| repr(v), str::to_owned)
}

/// What Python's `repr` of the loaded value would roughly print.
fn repr(v: Value<'_>) -> String {
    match v.as_global() {
        Some((module, name)) => format!("<class '{module}.{name}'>"),
        None => format!("{v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(data: &[u8]) -> (String, String) {
        class_name(data)
    }

    #[test]
    fn fast_and_slow_paths() {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            names(b"\x80\x03cBTrees.IOBTree\nIOBucket\nq\x00.\x80\x03N."),
            pair("BTrees.IOBTree", "IOBucket")
        );
        assert_eq!(names(b"(cfoo\nBar\nq\x01N\x86."), pair("foo", "Bar"));
        assert_eq!(names(b"cfoo\nBar"), pair("", ""));
        assert_eq!(names(b""), pair("", ""));
        // ((module, name), None), py3 and py2 strings
        assert_eq!(
            names(b"\x80\x03X\x01\x00\x00\x00mX\x01\x00\x00\x00n\x86N\x86."),
            pair("m", "n")
        );
        assert_eq!(names(b"(U\x01mU\x01ntN\x86."), pair("m", "n"));
        // (class, args) after PROTO: the fast path only looks right after it.
        assert_eq!(
            names(b"\x80\x02(cfoo\nBar\nK\x01\x85t."),
            pair("foo", "Bar")
        );
        assert_eq!(names(b"\x80\x02K\x05."), pair("5", ""));
        assert_eq!(
            names(b"\x80\x02\x8c\x01m\x8c\x01n\x93."),
            pair("<class 'm.n'>", "")
        );
        // a persistent class
        assert_eq!(
            names(b"\x80\x03C\x08\x00\x00\x00\x00\x00\x00\x00\x01Q)\x86."),
            pair("", "")
        );
    }
}
