//! Properties of the encoder: decoding what it writes gives the value back
//! (every flavor and protocol), and no graph, however broken, makes it
//! panic or hang; whatever it accepts, the decoder reads.

mod pickle_encode_util;

use bytes::Bytes;
use pickle_encode_util::{Allow, Gen, Same, same_value, tree};
use proptest::prelude::*;
use zodb_core::pickle::{
    Dialect, EncodeError, Encoder, Flavor, GlobalName, Graph, Node, NodeId, NodeSet, Object,
    ObjectKind, decode, decode_stream,
};

fn dialects() -> impl Strategy<Value = Dialect> {
    (prop_oneof![Just(Flavor::Py3), Just(Flavor::Py2)], 1u8..=3)
        .prop_map(|(f, p)| Dialect::new(f, p).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn decode_of_encode_is_the_value(t in tree(Allow { py2: true, newobj: true }), dialect in dialects()) {
        let mut g = Gen::new();
        let root = g.build(&t);
        let graph = g.b.into_graph();
        let data = Bytes::from(zodb_core::pickle::encode(&graph, root, dialect).unwrap());
        let (back, broot) = decode(&data).unwrap();
        let py2 = dialect.flavor() == Flavor::Py2;
        let how = Same {
            ints_by_value: !py2,
            bytes_reduced: dialect.protocol() < 3,
            py2_unshared: py2,
        };
        if let Err(e) = same_value(graph.value(root), back.value(broot), how) {
            prop_assert!(false, "{e}\nvalue {:?}", graph.value(root));
        }
    }

    #[test]
    fn records_share_one_memo(a in tree(Allow { py2: false, newobj: true }), b in tree(Allow { py2: false, newobj: true })) {
        let mut g = Gen::new();
        let (ra, rb) = (g.build(&a), g.build(&b));
        let graph = g.b.into_graph();
        let data = zodb_core::pickle::encode_record(&graph, ra, rb, Dialect::PY3).unwrap();
        let (back, roots) = decode_stream(&Bytes::from(data)).unwrap();
        prop_assert_eq!(roots.len(), 2);
        let how = Same { ints_by_value: true, bytes_reduced: false, py2_unshared: false };
        // Both pickles as one value, so sharing between them is checked too.
        let mut both = graph.clone();
        let pair = both.push(Node::Tuple(vec![ra, rb]));
        let mut back2 = back.clone();
        let pair2 = back2.push(Node::Tuple(vec![roots[0].0, roots[1].0]));
        if let Err(e) = same_value(both.value(pair), back2.value(pair2), how) {
            prop_assert!(false, "{e}");
        }
    }

    #[test]
    fn any_graph_encodes_or_errs(nodes in prop::collection::vec(raw_node(), 1..24), root in 0u32..30, dialect in dialects(), hint in any::<bool>()) {
        let mut graph = Graph::new();
        let ids: Vec<NodeId> = nodes.iter().map(|_| graph.push(Node::None)).collect();
        let n = nodes.len() as u32;
        // An id one past the last node, which the encoder must refuse.
        let out_of_range = {
            let mut g = Graph::new();
            (0..=n).map(|_| g.push(Node::None)).last().unwrap()
        };
        let pick = |i: u32| match i % (n + 1) {
            k if k < n => ids[k as usize],
            _ => out_of_range,
        };
        for (slot, raw) in ids.iter().zip(&nodes) {
            *graph.node_mut(*slot) = raw.make(&pick);
        }
        let root = pick(root);
        let mut e = Encoder::new(&graph, dialect);
        if hint {
            e.py2_single_refs(ids.iter().copied().step_by(2).collect::<NodeSet>());
        }
        match e.dump(root) {
            Ok(()) => {
                let data = Bytes::from(e.into_output());
                prop_assert!(decode(&data).is_ok(), "we wrote what we cannot read: {:?}", decode(&data));
            }
            Err(EncodeError::Protocol(_)) => prop_assert!(false, "dialects are valid"),
            Err(_) => {}
        }
    }
}

/// A node whose children are indices, resolved later.
#[derive(Clone, Debug)]
enum Raw {
    Atom(Node),
    Tuple(Vec<u32>),
    List(Vec<u32>),
    Dict(Vec<(u32, u32)>),
    Set(Vec<u32>, bool),
    Pid(u32),
    Object(u8, u32, u32, Option<u32>, Vec<u32>, Vec<(u32, u32)>),
}

impl Raw {
    fn make(&self, id: &dyn Fn(u32) -> NodeId) -> Node {
        let ids = |v: &[u32]| v.iter().map(|&i| id(i)).collect::<Vec<_>>();
        let pairs = |v: &[(u32, u32)]| v.iter().map(|&(a, b)| (id(a), id(b))).collect();
        match self {
            Raw::Atom(n) => n.clone(),
            Raw::Tuple(v) => Node::Tuple(ids(v)),
            Raw::List(v) => Node::List(ids(v)),
            Raw::Dict(v) => Node::Dict(pairs(v)),
            Raw::Set(v, frozen) => {
                if *frozen {
                    Node::FrozenSet(ids(v))
                } else {
                    Node::Set(ids(v))
                }
            }
            Raw::Pid(p) => Node::PersistentId(id(*p)),
            Raw::Object(kind, class, args, state, li, di) => Node::Object(Box::new(Object {
                kind: [
                    ObjectKind::Reduce,
                    ObjectKind::NewObj,
                    ObjectKind::Obj,
                    ObjectKind::Inst,
                    ObjectKind::NewObjEx,
                ][usize::from(*kind % 5)],
                class: id(*class),
                args: id(*args),
                kwargs: None,
                state: state.map(id),
                list_items: ids(li),
                dict_items: pairs(di),
            })),
        }
    }
}

fn raw_node() -> impl Strategy<Value = Raw> {
    let i = || 0u32..30;
    let atom = prop_oneof![
        Just(Node::None),
        any::<bool>().prop_map(Node::Bool),
        any::<i64>().prop_map(Node::Int),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| Node::Long(b.into())),
        any::<f64>().prop_map(Node::Float),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(|b| Node::Bytes(b.into())),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(|b| Node::Str(b.into())),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(|b| Node::ByteArray(b.into())),
        "\\PC{0,3}".prop_map(|s| Node::Unicode(Bytes::from(s))),
        ("[a-z\\n.é]{0,3}", "[a-z\\n]{0,3}")
            .prop_map(|(m, n)| Node::Global(GlobalName::new(&m, &n))),
    ];
    prop_oneof![
        atom.prop_map(Raw::Atom),
        prop::collection::vec(i(), 0..5).prop_map(Raw::Tuple),
        prop::collection::vec(i(), 0..5).prop_map(Raw::List),
        prop::collection::vec((i(), i()), 0..4).prop_map(Raw::Dict),
        (prop::collection::vec(i(), 0..4), any::<bool>()).prop_map(|(v, f)| Raw::Set(v, f)),
        i().prop_map(Raw::Pid),
        (
            any::<u8>(),
            i(),
            i(),
            prop::option::of(i()),
            prop::collection::vec(i(), 0..3),
            prop::collection::vec((i(), i()), 0..3)
        )
            .prop_map(|(k, c, a, s, l, d)| Raw::Object(k, c, a, s, l, d)),
    ]
}
