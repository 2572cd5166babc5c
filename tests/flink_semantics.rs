//! Where statewright follows Flink's state semantics on purpose, each test states what Flink
//! does and checks that statewright does the same; and the heap backend's determinism: the same
//! input gives the same state, the same cleanup and the same checkpoint bytes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright::{ManualClock, TtlBackend};

const SEC: i64 = 1_000;

#[derive(StatefulOperator, Default)]
#[operator(name = "expiring", key = u32)]
struct Expiring {
    #[state(ttl = "10s", visibility = "return_expired_if_not_cleaned_up")]
    value: ValueState<u64>,
    #[state(ttl = "10s", visibility = "return_expired_if_not_cleaned_up")]
    list: ListState<u64>,
    #[state(ttl = "10s", visibility = "return_expired_if_not_cleaned_up")]
    map: MapState<u32, u64>,
}

fn expiring<B: AnyBackend>(inner: B, clock: &ManualClock) -> Bound<Expiring, TtlBackend<B>> {
    // Incremental cleanup off: only reads find what has expired.
    let backend = TtlBackend::with_clock(inner, clock.clone()).with_incremental_cleanup(0, 1);
    Expiring::default().bind(backend).unwrap()
}

/// Flink (`TtlValueState#value`, `TtlListState#get`, `TtlMapState#get` under
/// `ReturnExpiredIfNotCleanedUp`): the read that finds an expired value returns it and clears
/// it, so the next read, even right after it, returns nothing.
fn expired_values_are_returned_once<B: AnyBackend>(inner: B) {
    let clock = ManualClock::new(0);
    let mut op = expiring(inner, &clock);
    let mut st = op.key(&1).unwrap();
    st.value().set(&7).unwrap();
    st.list().add(&1).unwrap();
    clock.set(5 * SEC);
    let mut st = op.key(&1).unwrap();
    st.list().add(&2).unwrap();
    st.map().put(&3, &30).unwrap();
    // The map entry is stamped at 5 s; move it past its life too.
    clock.set(16 * SEC);

    let mut st = op.key(&1).unwrap();
    assert_eq!(st.value().get_owned().unwrap(), Some(7), "first read");
    assert_eq!(
        st.value().get_owned().unwrap(),
        None,
        "second read, same view"
    );
    assert_eq!(st.list().get_owned().unwrap(), vec![1, 2], "first read");
    assert!(st.list().get_owned().unwrap().is_empty(), "second read");
    assert_eq!(st.map().get_owned(&3).unwrap(), Some(30), "first read");
    assert_eq!(st.map().get_owned(&3).unwrap(), None, "second read");
    // And in the next view, nothing is left.
    let mut st = op.key(&1).unwrap();
    assert_eq!(st.value().get_owned().unwrap(), None);
    assert!(st.list().is_empty().unwrap());
    assert!(st.map().is_empty().unwrap());
}

/// Flink (`TtlListState#get`): of a list whose elements expire at different times, the read
/// returns every element once, and afterwards only the ones still alive.
fn expired_list_elements_are_returned_once<B: AnyBackend>(inner: B) {
    let clock = ManualClock::new(0);
    let mut op = expiring(inner, &clock);
    op.key(&1).unwrap().list().add(&1).unwrap();
    clock.set(6 * SEC);
    op.key(&1).unwrap().list().add(&2).unwrap();
    clock.set(12 * SEC);
    let mut st = op.key(&1).unwrap();
    assert_eq!(st.list().get_owned().unwrap(), vec![1, 2]);
    assert_eq!(st.list().get_owned().unwrap(), vec![2]);
    assert_eq!(st.list().len().unwrap(), 1);
}

#[test]
fn heap_expired_values_are_returned_once() {
    expired_values_are_returned_once(HeapBackend::new());
}

#[test]
fn heap_expired_list_elements_are_returned_once() {
    expired_list_elements_are_returned_once(HeapBackend::new());
}

#[cfg(feature = "rocksdb")]
fn rocksdb() -> statewright::RocksDbBackend {
    statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory()).unwrap()
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_expired_values_are_returned_once() {
    expired_values_are_returned_once(rocksdb());
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_expired_list_elements_are_returned_once() {
    expired_list_elements_are_returned_once(rocksdb());
}

/// An aggregate whose `create()` is not neutral: a fresh accumulator already counts one.
struct CountFromOne;

impl Aggregate for CountFromOne {
    type In = u64;
    type Acc = u64;
    type Out = u64;
    fn create() -> u64 {
        1
    }
    fn add(acc: &mut u64, _: &u64) {
        *acc += 1;
    }
    fn result(acc: &u64) -> u64 {
        *acc
    }
    fn merge(acc: &mut u64, other: u64) {
        *acc += other;
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "merging", key = u32)]
struct Merging {
    #[state(aggregate = CountFromOne)]
    count: AggregatingState<u64, u64>,
}

/// Flink (`HeapAggregatingState` / `RocksDBAggregatingState#mergeNamespaces`): merging into a
/// namespace without an accumulator stores the merged accumulator as it is; `createAccumulator`
/// is called only by `add`.
#[test]
fn merging_into_a_key_without_an_accumulator_stores_it_as_it_is() {
    let mut op = Merging::default().bind(HeapBackend::new()).unwrap();
    let mut st = op.key(&1).unwrap();
    st.count().merge(5).unwrap();
    assert_eq!(st.count().get().unwrap(), Some(5));
    st.count().merge(2).unwrap();
    assert_eq!(st.count().get().unwrap(), Some(7));
    // `add` to a key without an accumulator starts from `create()`.
    let mut st = op.key(&2).unwrap();
    st.count().add(&0).unwrap();
    assert_eq!(st.count().get().unwrap(), Some(2));
}

#[derive(StatefulOperator, Default)]
#[operator(name = "determinism", key = u64)]
struct Sessions {
    #[state(ttl = "10s")]
    last: ValueState<u64>,
    #[state(ttl = "10s")]
    pages: MapState<u32, u64>,
    clicks: ListState<u32>,
}

/// One run of a fixed workload on a fresh heap backend: the snapshot file's bytes and how many
/// entries incremental cleanup removed.
fn run_once(dir: &std::path::Path, backend: HeapBackend) -> (Vec<u8>, u64) {
    let clock = ManualClock::new(0);
    let ttl = TtlBackend::with_clock(backend, clock.clone()).with_incremental_cleanup(3, 1);
    let mut op = Sessions::default().bind(ttl).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for step in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if step % 100 == 0 {
            clock.set(i64::try_from(step).unwrap() * 5);
        }
        let mut st = op.key(&(x % 3_000)).unwrap();
        st.last().set(&step).unwrap();
        st.pages()
            .put(&u32::try_from(x % 7).unwrap(), &step)
            .unwrap();
        if x.is_multiple_of(3) {
            st.clicks().add(&u32::try_from(x % 100).unwrap()).unwrap();
        }
    }
    let storage = CheckpointStorage::open(dir).unwrap();
    let info = op.checkpoint(&storage).unwrap();
    let (_, bytes) = storage.read_file(&info.files[0].to_ref()).unwrap();
    let cleaned = op.backend().ttl_stats().iter().map(|s| s.total()).sum();
    (bytes, cleaned)
}

#[test]
fn the_heap_backend_gives_the_same_checkpoint_and_cleanup_for_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let (a, cleaned_a) = run_once(&dir.path().join("a"), HeapBackend::new());
    let (b, cleaned_b) = run_once(&dir.path().join("b"), HeapBackend::new());
    assert!(
        cleaned_a > 0,
        "the workload lets entries expire and be cleaned up"
    );
    assert_eq!(cleaned_a, cleaned_b, "the same cleanup");
    assert!(a == b, "byte-identical snapshots ({} bytes)", a.len());
}
