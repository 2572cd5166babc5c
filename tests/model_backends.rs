//! Model-based test: random sequences of typed state operations (with snapshot and restore in
//! between) give the same results on the heap backend, on the RocksDB backend (feature
//! `rocksdb`) and on a plain in-memory model. `STATEWRIGHT_MODEL_CASES` sets the number of
//! cases (default 1000).
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

fn compare<B: AnyBackend>(op: &mut Bound<Model, B>, model: &Expected, base: u16) {
    for k in 0u16..6 {
        let mut st = op.key(&(base + k)).unwrap();
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

/// Applies one operation to the keys `base..base + 6`. A snapshot-and-restore round trips
/// the whole state through the canonical snapshot: into a fresh backend made by `fresh`, or
/// (for the shared RocksDB database, whose other keys belong to earlier cases) into a heap
/// backend whose snapshot must then equal the original's, byte for byte.
fn apply<B: AnyBackend>(bound: &mut Bound<Model, B>, o: &Op, base: u16, fresh: Option<fn() -> B>) {
    let key = |k: &u16| base + k;
    match o {
        Op::Set(k, v) => bound.key(&key(k)).unwrap().value().set(v).unwrap(),
        Op::ClearValue(k) => bound.key(&key(k)).unwrap().value().clear().unwrap(),
        Op::Add(k, s) => bound.key(&key(k)).unwrap().list().add(s).unwrap(),
        Op::ReplaceList(k, v) => bound.key(&key(k)).unwrap().list().update(v).unwrap(),
        Op::ClearList(k) => bound.key(&key(k)).unwrap().list().clear().unwrap(),
        Op::Put(k, u, v) => bound.key(&key(k)).unwrap().map().put(u, v).unwrap(),
        Op::Remove(k, u) => bound.key(&key(k)).unwrap().map().remove(u).unwrap(),
        Op::ClearMap(k) => bound.key(&key(k)).unwrap().map().clear().unwrap(),
        Op::Sum(k, v) => bound.key(&key(k)).unwrap().sum().add(v).unwrap(),
        Op::SnapshotRestore => {
            let mut bytes = Vec::new();
            bound
                .write_snapshot(SnapshotOptions::default(), Path::new("m.snap"), &mut bytes)
                .unwrap();
            let reader = SnapshotReader::parse("m.snap", &bytes).unwrap();
            if let Some(fresh) = fresh {
                *bound = Model::default().bind(fresh()).unwrap();
                bound.restore_snapshot(&reader).unwrap();
            } else {
                let mut heap = Model::default().bind(HeapBackend::new()).unwrap();
                heap.restore_snapshot(&reader).unwrap();
                let mut again = Vec::new();
                heap.write_snapshot(SnapshotOptions::default(), Path::new("m.snap"), &mut again)
                    .unwrap();
                assert_eq!(again, bytes);
            }
        }
    }
}

fn model_apply(model: &mut Expected, o: &Op) {
    match o.clone() {
        Op::Set(k, v) => {
            model.value.insert(k, v);
        }
        Op::ClearValue(k) => {
            model.value.remove(&k);
        }
        Op::Add(k, s) => model.list.entry(k).or_default().push(s),
        Op::ReplaceList(k, v) => {
            model.list.insert(k, v);
        }
        Op::ClearList(k) => {
            model.list.remove(&k);
        }
        Op::Put(k, u, v) => {
            model.map.entry(k).or_default().insert(u, v);
        }
        Op::Remove(k, u) => {
            if let Some(m) = model.map.get_mut(&k) {
                m.remove(&u);
            }
        }
        Op::ClearMap(k) => {
            model.map.remove(&k);
        }
        Op::Sum(k, v) => *model.sum.entry(k).or_default() += v,
        Op::SnapshotRestore => {}
    }
}

#[test]
fn backends_agree_with_the_model() {
    let cases = std::env::var("STATEWRIGHT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    // One RocksDB database for all cases (opening one per case would dominate the run); each
    // case works on keys of its own.
    #[cfg(feature = "rocksdb")]
    let rocksdb = || {
        let backend =
            statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory());
        Model::default().bind(backend.unwrap()).unwrap()
    };
    #[cfg(feature = "rocksdb")]
    let rocks = std::cell::RefCell::new(rocksdb());
    let case = std::cell::Cell::new(0u16);
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            let case_no = case.get();
            case.set(case_no.wrapping_add(1));
            #[cfg(feature = "rocksdb")]
            let base = (case_no % 50) * 8;
            let mut model = Expected::default();
            let mut heap = Model::default().bind(HeapBackend::new()).unwrap();
            #[cfg(feature = "rocksdb")]
            let mut rocks = rocks.borrow_mut();
            // A new database every 50 cases keeps the whole-state snapshots small.
            #[cfg(feature = "rocksdb")]
            if case_no.is_multiple_of(50) && case_no > 0 {
                *rocks = rocksdb();
            }
            for o in &ops {
                model_apply(&mut model, o);
                apply(&mut heap, o, 0, Some(HeapBackend::new));
                #[cfg(feature = "rocksdb")]
                apply(&mut rocks, o, base, None);
            }
            compare(&mut heap, &model, 0);
            #[cfg(feature = "rocksdb")]
            compare(&mut rocks, &model, base);
            Ok(())
        })
        .unwrap();
}
