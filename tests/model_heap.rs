//! Model-based test: random sequences of typed state operations (with snapshot and restore in
//! between) give the same results on the heap backend as on a plain in-memory model.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use proptest::prelude::*;
use statewright::prelude::*;
use statewright::snapshot::{SnapshotOptions, SnapshotReader};

#[derive(StatefulOperator, Default)]
#[operator(name = "model", key = u16, max_parallelism = 8)]
struct Model {
    value: ValueState<i64>,
    list: ListState<String>,
    map: MapState<i32, u64>,
    #[state(reduce = sum)]
    sum: ReducingState<i64>,
}

#[derive(Debug, Clone)]
enum Op {
    Set(u16, i64),
    ClearValue(u16),
    Add(u16, String),
    ReplaceList(u16, Vec<String>),
    ClearList(u16),
    Put(u16, i32, u64),
    Remove(u16, i32),
    ClearMap(u16),
    Sum(u16, i64),
    SnapshotRestore,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u16..6;
    prop_oneof![
        (key.clone(), any::<i64>()).prop_map(|(k, v)| Op::Set(k, v)),
        key.clone().prop_map(Op::ClearValue),
        (key.clone(), "[a-z]{0,5}").prop_map(|(k, s)| Op::Add(k, s)),
        (key.clone(), proptest::collection::vec("[a-z]{0,3}", 0..3))
            .prop_map(|(k, v)| Op::ReplaceList(k, v)),
        key.clone().prop_map(Op::ClearList),
        (key.clone(), -3i32..3, any::<u64>()).prop_map(|(k, u, v)| Op::Put(k, u, v)),
        (key.clone(), -3i32..3).prop_map(|(k, u)| Op::Remove(k, u)),
        key.clone().prop_map(Op::ClearMap),
        (key, -1000i64..1000).prop_map(|(k, v)| Op::Sum(k, v)),
        Just(Op::SnapshotRestore),
    ]
}

#[derive(Default)]
struct Expected {
    value: HashMap<u16, i64>,
    list: HashMap<u16, Vec<String>>,
    map: HashMap<u16, BTreeMap<i32, u64>>,
    sum: HashMap<u16, i64>,
}

fn compare(op: &mut Bound<Model, HeapBackend>, model: &Expected) {
    for k in 0u16..6 {
        let mut st = op.key(&k).unwrap();
        assert_eq!(
            st.value().get_owned().unwrap(),
            model.value.get(&k).copied()
        );
        let list = model.list.get(&k).cloned().unwrap_or_default();
        assert_eq!(st.list().get_owned().unwrap(), list);
        assert_eq!(st.list().len().unwrap(), list.len());
        let map: Vec<(i32, u64)> = model
            .map
            .get(&k)
            .map(|m| m.iter().map(|(a, b)| (*a, *b)).collect())
            .unwrap_or_default();
        let got: Vec<(i32, u64)> = st
            .map()
            .entries()
            .unwrap()
            .map(|e| e.map(|(k, v)| (k, v.to_native())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, map);
        assert_eq!(st.sum().get_owned().unwrap(), model.sum.get(&k).copied());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("STATEWRIGHT_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn heap_backend_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut bound = Model::default().bind(HeapBackend::new()).unwrap();
        let mut model = Expected::default();
        for o in ops {
            match o {
                Op::Set(k, v) => {
                    bound.key(&k).unwrap().value().set(&v).unwrap();
                    model.value.insert(k, v);
                }
                Op::ClearValue(k) => {
                    bound.key(&k).unwrap().value().clear().unwrap();
                    model.value.remove(&k);
                }
                Op::Add(k, s) => {
                    bound.key(&k).unwrap().list().add(&s).unwrap();
                    model.list.entry(k).or_default().push(s);
                }
                Op::ReplaceList(k, v) => {
                    bound.key(&k).unwrap().list().update(&v).unwrap();
                    model.list.insert(k, v);
                }
                Op::ClearList(k) => {
                    bound.key(&k).unwrap().list().clear().unwrap();
                    model.list.remove(&k);
                }
                Op::Put(k, u, v) => {
                    bound.key(&k).unwrap().map().put(&u, &v).unwrap();
                    model.map.entry(k).or_default().insert(u, v);
                }
                Op::Remove(k, u) => {
                    bound.key(&k).unwrap().map().remove(&u).unwrap();
                    if let Some(m) = model.map.get_mut(&k) {
                        m.remove(&u);
                    }
                }
                Op::ClearMap(k) => {
                    bound.key(&k).unwrap().map().clear().unwrap();
                    model.map.remove(&k);
                }
                Op::Sum(k, v) => {
                    bound.key(&k).unwrap().sum().add(&v).unwrap();
                    *model.sum.entry(k).or_default() += v;
                }
                Op::SnapshotRestore => {
                    let mut bytes = Vec::new();
                    bound.write_snapshot(SnapshotOptions::default(), Path::new("m.snap"), &mut bytes).unwrap();
                    let reader = SnapshotReader::parse("m.snap", &bytes).unwrap();
                    let mut fresh = Model::default().bind(HeapBackend::new()).unwrap();
                    fresh.restore_snapshot(&reader).unwrap();
                    bound = fresh;
                }
            }
        }
        compare(&mut bound, &model);
    }
}
