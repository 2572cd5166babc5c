//! Namespaced keyed state: one value per key and namespace, isolated from the key's other
//! namespaces; namespaces listed, cleared and merged; checkpointed and restored into either
//! backend; the namespace type part of the schema.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use statewright::prelude::*;

/// Mean of the values added.
pub struct Mean;

impl Aggregate for Mean {
    type In = i64;
    type Acc = (i64, u64);
    type Out = f64;
    fn create() -> (i64, u64) {
        (0, 0)
    }
    fn add(acc: &mut (i64, u64), v: &i64) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn result(acc: &(i64, u64)) -> f64 {
        acc.0 as f64 / acc.1.max(1) as f64
    }
    fn merge(acc: &mut (i64, u64), other: (i64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "windowed", key = String)]
struct Windowed {
    total: ValueState<u64>,
    #[state(namespace = i64)]
    last: ValueState<u64>,
    #[state(namespace = i64)]
    events: ListState<u32>,
    #[state(namespace = i64)]
    per_page: MapState<u32, u64>,
    #[state(namespace = i64, reduce = sum)]
    sum: ReducingState<i64>,
    #[state(namespace = i64, aggregate = Mean)]
    mean: AggregatingState<i64, f64>,
}

#[test]
fn each_namespace_holds_its_own_state() {
    let mut op = Windowed::default().bind(HeapBackend::new()).unwrap();
    let mut st = op.key("a").unwrap();
    st.total().set(&7).unwrap();
    for w in [0i64, 10, -10] {
        st.last(&w).set(&((w + 100) as u64)).unwrap();
        st.events(&w).add(&(w as u32)).unwrap();
        st.events(&w).add(&1).unwrap();
        st.per_page(&w).put(&1, &(w as u64)).unwrap();
        st.per_page(&w).put(&2, &5).unwrap();
        st.sum(&w).add(&w).unwrap();
        st.sum(&w).add(&1).unwrap();
        st.mean(&w).add(&w).unwrap();
    }
    assert_eq!(st.total().get_owned().unwrap(), Some(7));
    for w in [0i64, 10, -10] {
        assert_eq!(st.last(&w).get_owned().unwrap(), Some((w + 100) as u64));
        assert_eq!(st.events(&w).get_owned().unwrap(), vec![w as u32, 1]);
        let entries: Vec<(u32, u64)> = st
            .per_page(&w)
            .entries()
            .unwrap()
            .map(|e| e.map(|(k, v)| (k, v.to_native())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(entries, vec![(1, w as u64), (2, 5)]);
        assert_eq!(st.per_page(&w).len().unwrap(), 2);
        assert!(!st.per_page(&w).is_empty().unwrap());
        assert_eq!(st.sum(&w).get_owned().unwrap(), Some(w + 1));
        assert_eq!(st.mean(&w).get().unwrap(), Some(w as f64));
    }
    // A namespace nothing was written to is empty.
    assert_eq!(st.last(&5).get_owned().unwrap(), None);
    assert!(st.per_page(&5).is_empty().unwrap());
    assert_eq!(st.per_page(&5).len().unwrap(), 0);
    // Namespaces are listed in order (i64's order, negative first).
    assert_eq!(st.events_namespaces().list().unwrap(), vec![-10, 0, 10]);
    assert_eq!(st.per_page_namespaces().list().unwrap(), vec![-10, 0, 10]);
    // Clearing one namespace leaves the others.
    st.per_page_namespaces().clear(&0).unwrap();
    st.events(&10).clear().unwrap();
    st.per_page(&-10).clear().unwrap();
    assert_eq!(st.per_page_namespaces().list().unwrap(), vec![10]);
    assert_eq!(st.events_namespaces().list().unwrap(), vec![-10, 0]);
    assert_eq!(st.per_page(&10).len().unwrap(), 2);
    // Another key sees none of it.
    let mut other = op.key("b").unwrap();
    assert!(other.sum_namespaces().list().unwrap().is_empty());
    assert_eq!(other.sum(&0).get_owned().unwrap(), None);
}

#[test]
fn namespaces_merge_as_flink_merges_them() {
    let mut op = Windowed::default().bind(HeapBackend::new()).unwrap();
    let mut st = op.key("a").unwrap();
    for w in 1..=4i64 {
        st.events(&w).add(&(w as u32)).unwrap();
        st.events(&w).add(&(w as u32 * 10)).unwrap();
        st.sum(&w).add(&w).unwrap();
        st.mean(&w).add(&(w * 2)).unwrap();
    }
    // Merge 2, 3 and an empty namespace into 4; the target listed as a source is skipped.
    st.events_namespaces().merge(&4, &[2, 3, 9, 4]).unwrap();
    st.sum_namespaces().merge(&4, &[2, 3, 9]).unwrap();
    st.mean_namespaces().merge(&4, &[2, 3]).unwrap();
    assert_eq!(
        st.events(&4).get_owned().unwrap(),
        vec![4, 40, 2, 20, 3, 30]
    );
    assert_eq!(st.sum(&4).get_owned().unwrap(), Some(9));
    assert_eq!(st.mean(&4).get().unwrap(), Some((8 + 4 + 6) as f64 / 3.0));
    assert_eq!(st.events_namespaces().list().unwrap(), vec![1, 4]);
    assert_eq!(st.sum_namespaces().list().unwrap(), vec![1, 4]);
    // Merging into a namespace that holds nothing moves the sources.
    st.sum_namespaces().merge(&7, &[1]).unwrap();
    assert_eq!(st.sum(&7).get_owned().unwrap(), Some(1));
    assert_eq!(st.sum_namespaces().list().unwrap(), vec![4, 7]);
}

fn fill<B: StateBackend>(op: &mut Bound<Windowed, B>) {
    for i in 0..2_000u64 {
        let key = format!("user-{}", i % 97);
        let w = (i % 13) as i64 * 1_000;
        let mut st = op.key(key.as_str()).unwrap();
        st.last(&w).set(&i).unwrap();
        st.events(&w).add(&(i as u32)).unwrap();
        st.per_page(&w).put(&((i % 5) as u32), &i).unwrap();
        st.sum(&w).add(&(i as i64)).unwrap();
    }
}

type Dump = BTreeMap<(String, i64), (Option<u64>, Vec<u32>, Vec<(u32, u64)>, Option<i64>)>;

fn dump<B: StateBackend>(op: &mut Bound<Windowed, B>) -> Dump {
    let mut out = Dump::new();
    for k in 0..97 {
        let key = format!("user-{k}");
        let mut st = op.key(key.as_str()).unwrap();
        for w in st.events_namespaces().list().unwrap() {
            let map = st
                .per_page(&w)
                .entries()
                .unwrap()
                .map(|e| e.map(|(k, v)| (k, v.to_native())))
                .collect::<Result<_, _>>()
                .unwrap();
            out.insert(
                (key.clone(), w),
                (
                    st.last(&w).get_owned().unwrap(),
                    st.events(&w).get_owned().unwrap(),
                    map,
                    st.sum(&w).get_owned().unwrap(),
                ),
            );
        }
    }
    out
}

#[test]
fn namespaced_state_is_checkpointed_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Windowed::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op);
    op.checkpoint(&storage).unwrap();
    let expected = dump(&mut op);
    assert_eq!(expected.len(), 97 * 13);
    let mut restored = Windowed::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(dump(&mut restored), expected);
}

/// The same operator with another namespace type for `sum`.
#[derive(StatefulOperator, Default)]
#[operator(name = "windowed", key = String)]
struct WindowedOtherNamespace {
    total: ValueState<u64>,
    #[state(namespace = i64)]
    last: ValueState<u64>,
    #[state(namespace = i64)]
    events: ListState<u32>,
    #[state(namespace = i64)]
    per_page: MapState<u32, u64>,
    #[state(namespace = u32, reduce = sum)]
    sum: ReducingState<i64>,
    #[state(namespace = i64, aggregate = Mean)]
    mean: AggregatingState<i64, f64>,
}

/// The same operator with `last` declared without a namespace.
#[derive(StatefulOperator, Default)]
#[operator(name = "windowed", key = String)]
struct WithoutNamespace {
    total: ValueState<u64>,
    last: ValueState<u64>,
    #[state(namespace = i64)]
    events: ListState<u32>,
    #[state(namespace = i64)]
    per_page: MapState<u32, u64>,
    #[state(namespace = i64, reduce = sum)]
    sum: ReducingState<i64>,
    #[state(namespace = i64, aggregate = Mean)]
    mean: AggregatingState<i64, f64>,
}

#[test]
fn a_changed_namespace_type_is_a_schema_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Windowed::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op);
    op.checkpoint(&storage).unwrap();
    let err = WindowedOtherNamespace::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap_err();
    assert!(
        matches!(err, statewright::Error::SchemaMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("sum"), "{err}");
    // Adding a namespace to a state that had none is refused too.
    let err = WithoutNamespace::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap_err();
    assert!(
        matches!(err, statewright::Error::SchemaMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("last"), "{err}");
    let d = Windowed::DESCRIPTOR.state("per_page").unwrap();
    assert_eq!(d.namespace_type, Some("i64"));
    assert_eq!(d.user_key_type, Some("(i64, u32)"));
    assert!(d.has_user_key());
    assert!(!Windowed::DESCRIPTOR.state("total").unwrap().has_user_key());
}

proptest! {
    /// Namespaced list state behaves as a map from namespace to list, per key, under adds,
    /// clears and merges.
    #[test]
    fn namespaced_lists_behave_as_a_map_of_lists(
        ops in proptest::collection::vec((0u8..3, 0u8..4, 0i64..5, any::<u32>(), 0i64..5), 1..80)
    ) {
        let mut op = Windowed::default().bind(HeapBackend::new()).unwrap();
        let mut model: BTreeMap<(u8, i64), Vec<u32>> = BTreeMap::new();
        for (what, k, w, v, other) in ops {
            let key = format!("k{k}");
            let mut st = op.key(key.as_str()).unwrap();
            match what {
                0 => {
                    st.events(&w).add(&v).unwrap();
                    model.entry((k, w)).or_default().push(v);
                }
                1 => {
                    st.events_namespaces().clear(&w).unwrap();
                    model.remove(&(k, w));
                }
                _ => {
                    st.events_namespaces().merge(&w, &[other]).unwrap();
                    if other != w && let Some(src) = model.remove(&(k, other)) {
                        model.entry((k, w)).or_default().extend(src);
                    }
                }
            }
        }
        for k in 0..4u8 {
            let key = format!("k{k}");
            let mut st = op.key(key.as_str()).unwrap();
            let listed = st.events_namespaces().list().unwrap();
            let expected: Vec<i64> = model.keys().filter(|(kk, _)| *kk == k).map(|(_, w)| *w).collect();
            prop_assert_eq!(listed, expected);
            for w in 0..5 {
                let got = st.events(&w).get_owned().unwrap();
                prop_assert_eq!(got, model.get(&(k, w)).cloned().unwrap_or_default());
            }
        }
    }
}

#[cfg(feature = "rocksdb")]
mod rocksdb {
    use super::*;
    use statewright::{RocksDbBackend, RocksDbOptions};

    #[test]
    fn rocksdb_namespaces_behave_as_heap_namespaces_and_restore_across_backends() {
        let rocks = || RocksDbBackend::open_temporary(RocksDbOptions::low_memory()).unwrap();
        let mut heap = Windowed::default().bind(HeapBackend::new()).unwrap();
        let mut rock = Windowed::default().bind(rocks()).unwrap();
        fill(&mut heap);
        fill(&mut rock);
        let expected = dump(&mut heap);
        assert_eq!(dump(&mut rock), expected);
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path()).unwrap();
        rock.checkpoint(&storage).unwrap();
        let mut back = Windowed::default()
            .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
            .unwrap();
        assert_eq!(dump(&mut back), expected);
        // Merging on RocksDB.
        let mut st = rock.key("user-1").unwrap();
        st.events_namespaces().merge(&0, &[1_000, 2_000]).unwrap();
        st.sum_namespaces().merge(&0, &[1_000, 2_000]).unwrap();
        let mut st = heap.key("user-1").unwrap();
        st.events_namespaces().merge(&0, &[1_000, 2_000]).unwrap();
        st.sum_namespaces().merge(&0, &[1_000, 2_000]).unwrap();
        assert_eq!(dump(&mut rock), dump(&mut heap));
    }
}

/// Namespaced lists and values with a time-to-live.
#[derive(StatefulOperator, Default)]
#[operator(name = "ttl-windows", key = u64)]
struct TtlWindowed {
    #[state(namespace = i64, ttl = "1h")]
    events: ListState<u32>,
    #[state(namespace = i64, ttl = "1h", reduce = sum)]
    sum: ReducingState<i64>,
}

#[test]
fn namespaces_of_ttl_states_are_listed_and_merged() {
    let clock = statewright::ManualClock::new(0);
    let backend = TtlBackend::with_clock(HeapBackend::new(), clock.clone());
    let mut op = TtlWindowed::default().bind(backend).unwrap();
    let mut st = op.key(&1).unwrap();
    for w in [3i64, 1, 2] {
        st.events(&w).add(&(w as u32)).unwrap();
        st.sum(&w).add(&w).unwrap();
    }
    assert_eq!(st.events_namespaces().list().unwrap(), vec![1, 2, 3]);
    assert_eq!(st.sum_namespaces().list().unwrap(), vec![1, 2, 3]);
    st.events_namespaces().merge(&3, &[1, 2]).unwrap();
    assert_eq!(st.events(&3).get_owned().unwrap(), vec![3, 1, 2]);
    assert_eq!(st.events_namespaces().list().unwrap(), vec![3]);
    // Once expired, a namespace's list is gone from the listing too.
    clock.set(2 * 3_600_000);
    // (The backend reads its clock again at the next write.)
    op.key(&2).unwrap().sum(&0).add(&1).unwrap();
    let mut st = op.key(&1).unwrap();
    assert!(st.events_namespaces().list().unwrap().is_empty());
    assert!(st.sum_namespaces().list().unwrap().is_empty());
}
