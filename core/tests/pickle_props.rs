//! Hostile input: no reader panics on arbitrary bytes or on random opcode
//! soup, and the lean reference scanner agrees with the full decoder
//! whenever both accept a record.

#![allow(
    clippy::little_endian_bytes,
    reason = "pickle's binary integers are little-endian"
)]

use bytes::Bytes;
use proptest::prelude::*;
use zodb_core::Oid;
use zodb_core::pickle::{
    DisFlavor, DisMemo, Node, Value, class_name, decode, decode_record, decode_stream, dis,
    references,
};

/// Opcodes with plausible arguments, so random sequences get past the
/// first opcode and exercise the stack machine.
const FRAGMENTS: &[&[u8]] = &[
    b"(",
    b"N",
    b"K\x01",
    b"M\x00\x01",
    b"J\xff\xff\xff\xff",
    b"I01\n",
    b"I-5\n",
    b"L12L\n",
    b"F1.5\n",
    b"G\x3f\xf0\0\0\0\0\0\0",
    b"\x8a\x01\xff",
    b"\x8b\x01\0\0\0\x01",
    b"q\x00",
    b"q\x01",
    b"r\x02\0\0\0",
    b"p3\n",
    b"h\x00",
    b"h\x01",
    b"j\x02\0\0\0",
    b"g3\n",
    b"\x94",
    b"t",
    b")",
    b"\x85",
    b"\x86",
    b"\x87",
    b"]",
    b"l",
    b"a",
    b"e",
    b"}",
    b"d",
    b"s",
    b"u",
    b"\x8f",
    b"\x90",
    b"\x91",
    b"0",
    b"1",
    b"2",
    b".",
    b"\x80\x02",
    b"\x80\x03",
    b"\x88",
    b"\x89",
    b"cmod\nname\n",
    b"\x8c\x01m",
    b"\x93",
    b"R",
    b"b",
    b"\x81",
    b"\x92",
    b"imod\nname\n",
    b"o",
    b"Q",
    b"P\0\0\0\0\0\0\0\x01\n",
    b"U\x08\0\0\0\0\0\0\0\x02",
    b"C\x08\0\0\0\0\0\0\0\x03",
    b"X\x08\0\0\0\0\0\0\0\0\0\0\x04",
    b"T\x01\0\0\0w",
    b"S'a\\x41'\n",
    b"V\\u00e9\n",
    b"X\x02\0\0\0\xc3\xa9",
    b"B\x01\0\0\0b",
    b"\x95\x01\0\0\0\0\0\0\0",
    b"\x96\x01\0\0\0\0\0\0\0z",
    b"\x98",
    b"\x82\x01",
];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..48).prop_map(|v| v.concat())
}

/// Runs every reader; none may panic.
fn exercise(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok((graph, root)) = decode(&bytes) {
        let _ = format!("{:?}", graph.value(root));
    }
    if let Ok(rec) = decode_record(&bytes) {
        let _ = format!("{rec:?} {:?}", rec.class_path());
        for v in rec.graph.values() {
            let _ = (v.as_bytes(), v.as_text(), v.as_int(), v.persistent_ref());
        }
    }
    let _ = decode_stream(&bytes);
    let _ = references(data);
    let _ = class_name(data);
    for flavor in [DisFlavor::Python3, DisFlavor::Python2] {
        let mut out = String::new();
        let mut memo = DisMemo::with_flavor(flavor);
        if let Ok(end) = dis(data, 0, &mut out, &mut memo) {
            let _ = dis(data, end, &mut out, &mut memo);
        }
    }
}

/// referencesf computed from a decoded graph: persistent ids in stream
/// order, with ZODB's rules.
fn graph_references(rec_graph: &zodb_core::pickle::Graph) -> Result<Vec<Oid>, ()> {
    let oid = |v: Value<'_>| -> Result<Oid, ()> {
        let raw = match v.node() {
            Node::Bytes(b) | Node::Str(b) => b.clone(),
            Node::Unicode(b) if b.is_ascii() => b.clone(),
            _ => return Err(()),
        };
        Oid::from_slice(&raw).ok_or(())
    };
    let mut out = Vec::new();
    for v in rec_graph.values() {
        let Some(pid) = v.as_persistent_id() else {
            continue;
        };
        match pid.node() {
            Node::List(_) => {}
            Node::Tuple(_) => out.push(oid(pid.as_tuple().and_then(|t| t.get(0)).ok_or(())?)?),
            _ => out.push(oid(pid)?),
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&data);
    }

    #[test]
    fn opcode_soup_never_panics(a in soup(), b in soup()) {
        exercise(&a);
        let mut rec = a.clone();
        rec.extend_from_slice(&b);
        exercise(&rec);
    }

    #[test]
    fn scanner_agrees_with_decoder(a in soup(), b in soup()) {
        let data = Bytes::from([a, b".".to_vec(), b, b".".to_vec()].concat());
        if let Ok(rec) = decode_record(&data) {
            match (references(&data), graph_references(&rec.graph)) {
                (Ok(scanned), Ok(decoded)) => prop_assert_eq!(scanned, decoded),
                (Err(_), Err(())) => {}
                (scanned, decoded) => prop_assert!(false, "scanner {:?} vs decoder {:?}", scanned, decoded),
            }
        }
    }
}

/// A value for the test-only pickler below.
#[derive(Debug, Clone)]
enum T {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    /// A Python 2 `str`.
    Str(Vec<u8>),
    Text(String),
    Tuple(Vec<T>),
    List(Vec<T>),
    Dict(Vec<(T, T)>),
    /// `module.name(*args)` by REDUCE, with a BUILD state.
    Reduce(Vec<T>, Box<T>),
    /// A persistent reference: oid, form (0 `(oid, class)`, 1 bare bytes,
    /// 2 bare py2 str, 3 `['w', (oid,)]`, 4 `[oid]`, 5 `['n', (db, oid)]`).
    Ref(u64, u8),
    /// BINGET of an earlier memo entry (may even be an enclosing container).
    Get(u8),
}

fn tree() -> impl Strategy<Value = T> {
    let leaf = prop_oneof![
        Just(T::None),
        any::<bool>().prop_map(T::Bool),
        any::<i64>().prop_map(T::Int),
        any::<f64>().prop_map(T::Float),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(T::Bytes),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(T::Str),
        ".{0,12}".prop_map(T::Text),
        (0u64..1000, 0u8..6).prop_map(|(o, f)| T::Ref(o, f)),
        any::<u8>().prop_map(T::Get),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(T::Tuple),
            prop::collection::vec(inner.clone(), 0..6).prop_map(T::List),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(T::Dict),
            (prop::collection::vec(inner.clone(), 0..3), inner)
                .prop_map(|(a, s)| T::Reduce(a, Box::new(s))),
        ]
    })
}

/// Writes pickles the way CPython's pickler does (protocol 2/3 opcodes,
/// a BINPUT after each container), remembering the references it wrote.
#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    keys: u32,
    refs: Vec<Oid>,
}

impl Pickler {
    fn put(&mut self) {
        if self.keys < 256 {
            self.out.extend_from_slice(&[b'q', self.keys as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&self.keys.to_le_bytes());
        }
        self.keys += 1;
    }

    fn counted(&mut self, short: u8, long: u8, b: &[u8]) {
        if b.len() < 256 {
            self.out.extend_from_slice(&[short, b.len() as u8]);
        } else {
            self.out.push(long);
            self.out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(b);
    }

    fn text(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn value(&mut self, t: &T) {
        match t {
            T::None => self.out.push(b'N'),
            T::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            T::Int(v) => match u8::try_from(*v) {
                Ok(b) => self.out.extend_from_slice(&[b'K', b]),
                Err(_) => match i32::try_from(*v) {
                    Ok(i) => {
                        self.out.push(b'J');
                        self.out.extend_from_slice(&i.to_le_bytes());
                    }
                    Err(_) => {
                        self.out.extend_from_slice(&[0x8a, 8]);
                        self.out.extend_from_slice(&v.to_le_bytes());
                    }
                },
            },
            T::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            T::Bytes(b) => self.counted(b'C', b'B', b),
            T::Str(b) => self.counted(b'U', b'T', b),
            T::Text(s) => self.text(s),
            T::Tuple(items) => {
                match items.len() {
                    0 => self.out.push(b')'),
                    n @ 1..=3 => {
                        items.iter().for_each(|i| self.value(i));
                        self.out.push(0x84 + n as u8);
                    }
                    _ => {
                        self.out.push(b'(');
                        items.iter().for_each(|i| self.value(i));
                        self.out.push(b't');
                    }
                }
                self.put();
            }
            T::List(items) => {
                self.out.push(b']');
                self.put();
                self.out.push(b'(');
                items.iter().for_each(|i| self.value(i));
                self.out.push(b'e');
            }
            T::Dict(items) => {
                self.out.push(b'}');
                self.put();
                for (k, v) in items {
                    self.value(k);
                    self.value(v);
                    self.out.push(b's');
                }
            }
            T::Reduce(args, state) => {
                self.out.extend_from_slice(b"cmod\nfunc\n");
                self.value(&T::Tuple(args.clone()));
                self.out.push(b'R');
                self.put();
                self.value(state);
                self.out.push(b'b');
            }
            T::Ref(oid, form) => {
                let raw = oid.to_be_bytes();
                match form {
                    0 => {
                        self.counted(b'C', b'B', &raw);
                        self.out.extend_from_slice(b"cmod\nKlass\n\x86");
                    }
                    1 => self.counted(b'C', b'B', &raw),
                    2 => self.counted(b'U', b'T', &raw),
                    3 => {
                        self.out.push(b'(');
                        self.text("w");
                        self.counted(b'C', b'B', &raw);
                        self.out.extend_from_slice(b"\x85l");
                    }
                    4 => {
                        self.out.extend_from_slice(b"(");
                        self.counted(b'C', b'B', &raw);
                        self.out.push(b'l');
                    }
                    _ => {
                        self.out.push(b'(');
                        self.text("n");
                        self.text("db");
                        self.counted(b'C', b'B', &raw);
                        self.out.extend_from_slice(b"\x86l");
                    }
                }
                if *form <= 2 {
                    self.refs.push(Oid(*oid));
                }
                self.out.push(b'Q');
            }
            T::Get(i) => match u32::from(*i).checked_rem(self.keys) {
                Some(k) if k < 256 => self.out.extend_from_slice(&[b'h', k as u8]),
                Some(k) => {
                    self.out.push(b'j');
                    self.out.extend_from_slice(&k.to_le_bytes());
                }
                None => self.out.push(b'N'),
            },
        }
    }

    /// A record: class pickle then state pickle, one memo.
    fn record(state: &T, proto: u8) -> Pickler {
        let mut p = Pickler::default();
        p.out.extend_from_slice(&[0x80, proto]);
        p.out.extend_from_slice(b"cpkg.mod\nKlass\n");
        p.put();
        p.out.push(b'.');
        p.out.extend_from_slice(&[0x80, proto]);
        p.value(state);
        p.out.push(b'.');
        p
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Valid records of random shape: every reader accepts them, the
    /// scanner, the decoder and the pickler agree on the references, and
    /// the disassembler walks both pickles to the end.
    #[test]
    fn generated_records(state in tree(), proto in 2u8..=3) {
        let p = Pickler::record(&state, proto);
        let data = Bytes::from(p.out);
        let rec = decode_record(&data).unwrap();
        prop_assert_eq!(rec.class_path(), Some(("pkg.mod", "Klass")));
        prop_assert_eq!(class_name(&data), ("pkg.mod".to_owned(), "Klass".to_owned()));
        prop_assert_eq!(&references(&data).unwrap(), &p.refs);
        prop_assert_eq!(&graph_references(&rec.graph).unwrap(), &p.refs);
        let _ = format!("{rec:?}");
        let (mut out, mut memo) = (String::new(), DisMemo::new());
        let end = dis(&data, 0, &mut out, &mut memo).unwrap();
        prop_assert_eq!(dis(&data, end, &mut out, &mut memo).unwrap(), data.len());
    }
}

#[test]
fn hostile_lengths_and_depth() {
    // Lengths far beyond the input never allocate or panic.
    for p in [
        &b"B\xff\xff\xff\xff"[..],
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"T\xff\xff\xff\x7f",
        b"r\xff\xff\xff\xffN.",
    ] {
        exercise(p);
    }
    // Deep nesting through the memo (not the stack) decodes and prints.
    let mut p = b"]p0\n".to_vec();
    for i in 0..10_000 {
        p.extend_from_slice(format!("]p{}\na0g{}\n", i + 1, i + 1).as_bytes());
    }
    p.extend_from_slice(b"0g0\n.");
    let (graph, root) = decode(&Bytes::from(p)).unwrap();
    let shown = format!("{:?}", graph.value(root));
    assert!(shown.starts_with("[[[") && shown.contains("[…]"), "{shown}");
    // Deep MARK nesting is refused, not recursed into.
    exercise(&[b'('; 100_000]);
}
