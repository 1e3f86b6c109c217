//! Hand-made pickles covering every opcode of protocols 0-3, against what
//! the Python reference made of them (golden/pickles.txt, written by
//! golden/gen_pickles.py): pickletools' disassembly byte for byte, `repr()` of
//! the loaded value, ZODB's `referencesf` and `get_pickle_metadata`.

mod pickle_util;

use bytes::Bytes;
use pickle_util::unhex;
use zodb_core::Oid;
use zodb_core::pickle::{Decoder, DisMemo, class_name, decode, dis, references};

#[derive(Default, Debug)]
struct Case {
    name: String,
    pickle: Vec<u8>,
    pickles: usize,
    dis_ok: bool,
    dis: String,
    repr: Option<String>,
    refs: Option<String>,
    meta: Option<String>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("golden/pickles.txt");
    let mut cases = Vec::new();
    let mut c = Case::default();
    for line in text.lines() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "#" => {}
            "case" => c.name = rest.to_owned(),
            "pickle" => c.pickle = unhex(rest),
            "pickles" => c.pickles = rest.parse().unwrap(),
            "dis" => c.dis_ok = rest == "ok",
            "|" => {
                c.dis.push_str(rest);
                c.dis.push('\n');
            }
            "repr" => c.repr = Some(String::from_utf8(unhex(rest)).unwrap()),
            "refs" => c.refs = Some(rest.to_owned()),
            "meta" => c.meta = Some(rest.to_owned()),
            "end" => cases.push(std::mem::take(&mut c)),
            _ => panic!("bad golden line {line:?}"),
        }
    }
    assert!(cases.len() >= 100, "{} cases", cases.len());
    cases
}

#[test]
fn dis_matches_pickletools() {
    for c in cases() {
        let mut out = String::new();
        let mut memo = DisMemo::new();
        let mut pos = 0;
        let mut result = Ok(());
        for _ in 0..c.pickles {
            match dis(&c.pickle, pos, &mut out, &mut memo) {
                Ok(end) => pos = end,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match (c.dis_ok, result) {
            (true, Ok(())) => assert_eq!(out, c.dis, "{}", c.name),
            (false, Err(_)) => {}
            (true, Err(e)) => panic!("{}: pickletools succeeded, we failed: {e}\n{out}", c.name),
            (false, Ok(())) => panic!("{}: pickletools failed, we printed\n{out}", c.name),
        }
    }
}

#[test]
fn decoded_values_repr_like_python() {
    let mut compared = 0;
    for c in cases() {
        let data = Bytes::from(c.pickle.clone());
        let decoded = if c.pickles == 1 {
            decode(&data).map(|_| ())
        } else {
            Decoder::new(data.clone()).load().map(|_| ())
        };
        let Some(want) = c.repr else {
            // Anything else must decode or fail cleanly, never panic.
            let _ = decoded;
            continue;
        };
        let (graph, root) = decode(&data).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(format!("{:?}", graph.value(root)), want, "{}", c.name);
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} compared");
}

#[test]
fn references_and_class_names_like_zodb() {
    for c in cases() {
        if let Some(want) = &c.refs {
            let got = references(&c.pickle)
                .map(|v| v.iter().map(Oid::to_string).collect::<Vec<_>>().join(","));
            match want.strip_prefix('!') {
                None => assert_eq!(
                    &got.unwrap_or_else(|e| panic!("{}: {e}", c.name)),
                    want,
                    "{}",
                    c.name
                ),
                Some(err) => assert!(
                    got.is_err(),
                    "{}: ZODB raised {err}, we gave {got:?}",
                    c.name
                ),
            }
        }
        if let Some(want) = &c.meta {
            let (m, n) = class_name(&c.pickle);
            let got = format!(
                "{},{}",
                pickle_util::hex(m.as_bytes()),
                pickle_util::hex(n.as_bytes())
            );
            match want.strip_prefix('!') {
                None => assert_eq!(&got, want, "{}", c.name),
                Some(_) => assert_eq!(got, ",", "{}: Python raised; we give empty names", c.name),
            }
        }
    }
}

fn case(name: &str) -> Case {
    cases().into_iter().find(|c| c.name == name).unwrap()
}

/// Python 3 writes bytes at protocols 0-2 through `_codecs.encode` and
/// `__builtin__.bytes`; `as_bytes` reads every spelling back.
#[test]
fn bytes_in_every_protocol() {
    let want: [&[u8]; 4] = [b"", b"a", b"\x00\xff'\"", &[b'x'; 60]];
    for proto in 0..4 {
        let c = case(&format!("bytes_p{proto}"));
        let (graph, root) = decode(&Bytes::from(c.pickle)).unwrap();
        let t = graph.value(root).as_tuple().unwrap();
        let got: Vec<Bytes> = t.iter().map(|v| v.as_bytes().unwrap()).collect();
        assert_eq!(got, want, "protocol {proto}");
    }
}

/// Every persistent reference form of spec pickles.md §4.
#[test]
fn persistent_reference_forms() {
    use zodb_core::pickle::{PersistentRef, decode_record};
    let rec = decode_record(&Bytes::from(case("rec_ref_forms").pickle)).unwrap();
    let refs: Vec<String> = rec
        .state()
        .as_tuple()
        .unwrap()
        .iter()
        .map(|v| match v.persistent_ref().unwrap() {
            PersistentRef::Oid { oid, class } => format!(
                "oid {oid} {:?}",
                class.map(|_| v.persistent_ref().unwrap().class_path())
            ),
            PersistentRef::Weak { oid, database } => format!("weak {oid} {database:?}"),
            PersistentRef::Multi {
                database,
                oid,
                class,
            } => format!("multi {database} {oid} {:?}", class.is_some()),
        })
        .collect();
    assert_eq!(
        refs,
        [
            "oid 0000000000000005 None",
            "oid 0000000000000107 None",
            "weak 0000000000000005 None",
            "weak 0000000000000107 None",
            "multi db 0000000000000005 false",
            "multi db 0000000000000107 true",
            "oid 0000000000000005 Some(Some((\"mod\", \"name\")))",
        ]
    );
    assert_eq!(
        format!("{:?}", rec.state()),
        "(ref(0000000000000005), ref(0000000000000107), wref(0000000000000005), wref(0000000000000107), \
         xref(\"db\" 0000000000000005), xref(\"db\" 0000000000000107 foo.Bar), ref(0000000000000005 mod.name))"
    );
}
