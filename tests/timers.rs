//! Timers: set semantics, deletion, firing order, timers registered while firing, a model of
//! timers as a `BTreeSet`, processing time, checkpoints of every kind with timers, restores
//! into the other backend, and rescaling with pending timers.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::keygroup::{KeyGroupRange, key_group};
use statewright::prelude::*;
use statewright::{StateKey, StateKind, TimeDomain, Timer};

/// Counts per key, with an event-time timer per (key, bucket) and processing-time timers.
#[derive(StatefulOperator, Default)]
#[operator(name = "timed", key = String, max_parallelism = 64)]
struct Timed {
    count: ValueState<u64>,
    timers: TimerService<u32>,
}

/// A timer service without a namespace.
#[derive(StatefulOperator, Default)]
#[operator(name = "plain", key = u64)]
struct Plain {
    seen: ValueState<u64>,
    timers: TimerService,
}

type Fired = Vec<(String, u32, i64)>;

fn record<B: StateBackend>(
    fired: &mut Fired,
) -> impl FnMut(Timer<String, u32>, TimedKeyed<'_, B>) -> statewright::Result<()> + '_ {
    |t, _| {
        fired.push((t.key, t.namespace, t.timestamp));
        Ok(())
    }
}

#[test]
fn registering_twice_gives_one_timer_and_delete_removes_it() {
    let mut op = Timed::default().bind(HeapBackend::new()).unwrap();
    {
        let mut st = op.key("a").unwrap();
        st.timers().register_event_time_in(&1, 100).unwrap();
        st.timers().register_event_time_in(&1, 100).unwrap();
        st.timers().register_event_time_in(&2, 100).unwrap();
        st.timers().register_processing_time_in(&1, 100).unwrap();
        st.timers().register_event_time_in(&1, 50).unwrap();
        assert_eq!(
            st.timers().list().unwrap(),
            vec![
                (TimeDomain::EventTime, 50, 1),
                (TimeDomain::EventTime, 100, 1),
                (TimeDomain::EventTime, 100, 2),
                (TimeDomain::ProcessingTime, 100, 1),
            ]
        );
        st.timers().delete_event_time_in(&1, 50).unwrap();
        // Deleting what is not there does nothing.
        st.timers().delete_event_time_in(&9, 50).unwrap();
    }
    assert_eq!(op.timer_count(TimeDomain::EventTime).unwrap(), 2);
    assert_eq!(op.timer_count(TimeDomain::ProcessingTime).unwrap(), 1);
    assert_eq!(op.next_timer(TimeDomain::EventTime), Some(100));
    let mut fired = Fired::new();
    assert_eq!(op.advance_watermark(99, record(&mut fired)).unwrap(), 0);
    assert_eq!(op.advance_watermark(100, record(&mut fired)).unwrap(), 2);
    assert_eq!(fired, vec![("a".into(), 1, 100), ("a".into(), 2, 100)]);
    // Processing-time timers follow their own clock.
    assert_eq!(op.timer_count(TimeDomain::ProcessingTime).unwrap(), 1);
    assert!(op.key("a").unwrap().timers().list().unwrap().len() == 1);
    let mut fired = Fired::new();
    assert_eq!(
        op.advance_processing_time(1_000, record(&mut fired))
            .unwrap(),
        1
    );
    assert_eq!(fired, vec![("a".into(), 1, 100)]);
    assert!(op.key("a").unwrap().timers().list().unwrap().is_empty());
}

#[test]
fn timers_fire_in_time_then_key_then_namespace_order_with_their_keys_state() {
    let mut op = Timed::default().bind(HeapBackend::new()).unwrap();
    let plan = [
        ("b", 2, 30),
        ("a", 7, 30),
        ("a", 1, 30),
        ("c", 0, 10),
        ("b", 1, 20),
        ("aa", 0, 30),
    ];
    for (i, (k, ns, ts)) in plan.iter().enumerate() {
        let mut st = op.key(*k).unwrap();
        st.timers().register_event_time_in(ns, *ts).unwrap();
        st.count().set(&(i as u64)).unwrap();
    }
    let mut fired = Vec::new();
    op.advance_watermark(30, |t, mut st| {
        // The callback sees the timer's key's state.
        let count = st.count().get_owned()?.unwrap();
        fired.push((t.key, t.namespace, t.timestamp, count));
        Ok(())
    })
    .unwrap();
    let mut expected: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(i, (k, ns, ts))| {
            // The last write of each key is what its timers see.
            let count = plan.iter().rposition(|p| p.0 == *k).unwrap() as u64;
            let _ = i;
            (*ts, k.to_string().to_key_bytes(), *ns, count)
        })
        .collect();
    expected.sort();
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(ts, k, ns, c)| (String::from_key_bytes(&k).unwrap(), ns, ts, c))
        .collect();
    assert_eq!(fired, expected);
    assert_eq!(op.watermark(), Some(30));
}

#[test]
fn timers_registered_while_firing_fire_in_the_same_call_when_due() {
    let mut op = Plain::default().bind(HeapBackend::new()).unwrap();
    op.key(&1)
        .unwrap()
        .timers()
        .register_event_time(10)
        .unwrap();
    let mut fired = Vec::new();
    let n = op
        .advance_watermark(100, |t, mut st| {
            fired.push((t.key, t.timestamp));
            st.seen().update(|s| s.unwrap_or(0) + 1)?;
            // A chain of timers 30 ms apart: those at or before 100 fire in this call.
            st.timers().register_event_time(t.timestamp + 30)?;
            // Registering one that already fired in the past fires it at once, once.
            if t.timestamp == 10 {
                st.timers().register_event_time(5)?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        fired,
        vec![
            (1, 10),
            (1, 5),
            (1, 35),
            (1, 40),
            (1, 65),
            (1, 70),
            (1, 95),
            (1, 100)
        ]
    );
    assert_eq!(n, fired.len());
    assert_eq!(op.key(&1).unwrap().seen().get_owned().unwrap(), Some(8));
    // What was registered past the watermark waits.
    assert_eq!(op.next_timer(TimeDomain::EventTime), Some(125));
    assert_eq!(op.timer_count(TimeDomain::EventTime).unwrap(), 2);
    // The view reads the watermark and processing time.
    let st = op.key(&1).unwrap();
    let _ = st;
    let mut op2 = Plain::default().bind(HeapBackend::new()).unwrap();
    assert_eq!(op2.key(&1).unwrap().timers().current_watermark(), None);
    op2.advance_processing_time(7, |_, _| Ok(())).unwrap();
    op2.set_watermark(3);
    let t = op2.key(&1).unwrap();
    let mut t = t;
    assert_eq!(t.timers().current_watermark(), Some(3));
    assert_eq!(t.timers().current_processing_time(), Some(7));
}

#[test]
fn an_error_in_the_callback_stops_firing_and_keeps_later_timers() {
    let mut op = Plain::default().bind(HeapBackend::new()).unwrap();
    for k in 0..5u64 {
        op.key(&k)
            .unwrap()
            .timers()
            .register_event_time(k as i64)
            .unwrap();
    }
    let err = op
        .advance_watermark(10, |t, _| {
            if t.key == 2 {
                Err(statewright::Error::Backend {
                    backend: "test",
                    message: "stop".into(),
                })
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop"), "{err}");
    assert_eq!(op.timer_count(TimeDomain::EventTime).unwrap(), 2);
    assert_eq!(op.next_timer(TimeDomain::EventTime), Some(3));
}

#[derive(Debug, Clone)]
enum Op {
    Register(TimeDomain, u8, u8, i8),
    Delete(TimeDomain, u8, u8, i8),
    Advance(TimeDomain, i8),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let domain = prop_oneof![
        Just(TimeDomain::EventTime),
        Just(TimeDomain::ProcessingTime)
    ];
    prop_oneof![
        4 => (domain.clone(), 0u8..6, 0u8..3, any::<i8>()).prop_map(|(d, k, n, t)| Op::Register(d, k, n, t)),
        2 => (domain.clone(), 0u8..6, 0u8..3, any::<i8>()).prop_map(|(d, k, n, t)| Op::Delete(d, k, n, t)),
        1 => (domain, any::<i8>()).prop_map(|(d, t)| Op::Advance(d, t)),
    ]
}

/// Runs `ops` on `op` and on a model of timers: a `BTreeSet` of (timestamp, key bytes,
/// namespace) and a clock per domain.
fn check_model<B: AnyBackend + 'static>(
    mut op: Bound<Timed, B>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<TimeDomain, BTreeSet<(i64, Vec<u8>, u32)>> = BTreeMap::new();
    let mut clock: BTreeMap<TimeDomain, i64> = BTreeMap::new();
    for o in ops {
        match o {
            Op::Register(d, k, n, t) | Op::Delete(d, k, n, t) => {
                let key = format!("k{k}");
                let add = matches!(o, Op::Register(..));
                let mut st = op.key(key.as_str()).unwrap();
                let mut timers = st.timers();
                let (ns, ts) = (u32::from(n), i64::from(t));
                match (d, add) {
                    (TimeDomain::EventTime, true) => timers.register_event_time_in(&ns, ts),
                    (TimeDomain::EventTime, false) => timers.delete_event_time_in(&ns, ts),
                    (TimeDomain::ProcessingTime, true) => {
                        timers.register_processing_time_in(&ns, ts)
                    }
                    (TimeDomain::ProcessingTime, false) => {
                        timers.delete_processing_time_in(&ns, ts)
                    }
                }
                .unwrap();
                let set = model.entry(d).or_default();
                let entry = (ts, key.to_key_bytes(), ns);
                if add {
                    set.insert(entry);
                } else {
                    set.remove(&entry);
                }
            }
            Op::Advance(d, t) => {
                let now = clock.entry(d).or_insert(i64::MIN);
                *now = (*now).max(i64::from(t));
                let now = *now;
                let set = model.entry(d).or_default();
                let mut expected = Vec::new();
                while set.first().is_some_and(|e| e.0 <= now) {
                    let (ts, k, ns) = set.pop_first().unwrap();
                    expected.push((String::from_key_bytes(&k).unwrap(), ns, ts));
                }
                let mut fired = Fired::new();
                match d {
                    TimeDomain::EventTime => op.advance_watermark(i64::from(t), record(&mut fired)),
                    TimeDomain::ProcessingTime => {
                        op.advance_processing_time(i64::from(t), record(&mut fired))
                    }
                }
                .unwrap();
                prop_assert_eq!(fired, expected);
            }
        }
        for d in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            let set = model.entry(d).or_default();
            prop_assert_eq!(op.timer_count(d).unwrap(), set.len());
            prop_assert_eq!(op.next_timer(d), set.first().map(|e| e.0));
        }
    }
    // Each key lists exactly its model timers.
    for k in 0..6u8 {
        let key = format!("k{k}");
        let mut expected = Vec::new();
        for (d, set) in &model {
            for (ts, kb, ns) in set {
                if *kb == key.to_key_bytes() {
                    expected.push((*d, *ts, *ns));
                }
            }
        }
        expected.sort();
        let listed = op.key(key.as_str()).unwrap().timers().list().unwrap();
        prop_assert_eq!(listed, expected);
    }
    Ok(())
}

proptest! {
    /// Timers behave as a set of (timestamp, key, namespace) per domain that fires in order.
    #[test]
    fn timers_behave_as_an_ordered_set(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        check_model(Timed::default().bind(HeapBackend::new()).unwrap(), ops)?;
    }
}

#[cfg(feature = "rocksdb")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The same on RocksDB, whose timers are read in time order from the backend, with a cache
    /// of two timers per key group and domain: the cache overflows, empties and is refilled
    /// from RocksDB all the time.
    #[test]
    fn timers_on_rocksdb_behave_as_an_ordered_set(
        ops in proptest::collection::vec(op_strategy(), 1..120)
    ) {
        let db = statewright::RocksDbBackend::open_temporary(
            statewright::RocksDbOptions::low_memory(),
        )
        .unwrap();
        let op = Timed::default()
            .bind(db)
            .unwrap()
            .with_timer_cache_size(2)
            .unwrap();
        check_model(op, ops)?;
    }
}

const KEYS: u64 = 300;

fn user(i: u64) -> String {
    format!("user-{i}")
}

/// Registers, for every key, event-time timers at `i`, `i + 1000` and a processing-time timer.
fn fill<B: StateBackend>(op: &mut Bound<Timed, B>, range: Option<KeyGroupRange>) {
    for i in 0..KEYS {
        let key = user(i);
        if let Some(r) = range
            && !r.contains(key_group(&key.to_key_bytes(), 64))
        {
            continue;
        }
        let mut st = op.key(key.as_str()).unwrap();
        st.count().set(&i).unwrap();
        st.timers().register_event_time_in(&0, i as i64).unwrap();
        st.timers()
            .register_event_time_in(&1, 1_000 + i as i64)
            .unwrap();
        st.timers()
            .register_processing_time_in(&2, 5_000 + i as i64)
            .unwrap();
    }
}

/// Fires everything: the (key, namespace, timestamp, count) of each timer, in firing order.
fn fire_all<B: StateBackend + 'static>(op: &mut Bound<Timed, B>) -> Vec<(String, u32, i64, u64)> {
    let mut out = Vec::new();
    let mut f = |t: Timer<String, u32>, mut st: TimedKeyed<'_, B>| {
        let c = st.count().get_owned()?.unwrap_or(u64::MAX);
        out.push((t.key, t.namespace, t.timestamp, c));
        Ok(())
    };
    op.advance_watermark(i64::MAX, &mut f).unwrap();
    op.advance_processing_time(i64::MAX, &mut f).unwrap();
    out
}

#[test]
fn timers_are_checkpointed_and_restored_and_fire_once_after_restore() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Timed::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, None);
    // Half the event-time timers fired before the checkpoint.
    let before = op
        .advance_watermark(KEYS as i64 / 2, |_, _| Ok(()))
        .unwrap();
    assert_eq!(before, KEYS as usize / 2 + 1);
    op.checkpoint(&storage).unwrap();
    let expected = fire_all(&mut op);
    assert_eq!(expected.len(), 3 * KEYS as usize - before);

    let mut restored = Timed::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(restored.watermark(), Some(KEYS as i64 / 2));
    assert_eq!(
        restored.timer_count(TimeDomain::EventTime).unwrap(),
        2 * KEYS as usize - before
    );
    assert_eq!(fire_all(&mut restored), expected);
}

#[test]
fn incremental_checkpoints_hold_registered_and_deleted_timers() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Timed::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, None);
    checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    // Changes since: some timers fire (and so are deleted), some are deleted, some added.
    op.advance_watermark(99, |_, _| Ok(())).unwrap();
    for i in (100..KEYS).step_by(3) {
        let mut st = op.key(user(i).as_str()).unwrap();
        st.timers()
            .delete_event_time_in(&1, 1_000 + i as i64)
            .unwrap();
        st.timers().register_event_time_in(&7, 7_000).unwrap();
    }
    let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(
        report.info.kind(),
        statewright::checkpoint::SnapshotKind::Incremental
    );
    let expected = fire_all(&mut op);
    let mut restored = Timed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert_eq!(fire_all(&mut restored), expected);
}

#[test]
fn pending_timers_rescale_with_their_key_groups_and_fire_once() {
    rescale_pending_timers(&HeapBackend::new);
}

/// The same on RocksDB, whose instances hold only the first timers of each of their key
/// groups (ranges that start past 0, of 21 and 22 groups), with a cache of two per group.
#[cfg(feature = "rocksdb")]
#[test]
fn pending_timers_rescale_with_their_key_groups_and_fire_once_on_rocksdb() {
    rescale_pending_timers(&|| {
        statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory())
            .unwrap()
    });
}

fn rescale_pending_timers<B: AnyBackend + 'static>(backend: &dyn Fn() -> B) {
    for (from, to) in [(2u16, 3u16), (3, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path()).unwrap();
        let mut reference = Timed::default().bind(HeapBackend::new()).unwrap();
        fill(&mut reference, None);
        reference.advance_watermark(40, |_, _| Ok(())).unwrap();
        let expected = fire_all(&mut reference);

        let mut pending = storage.begin().unwrap();
        for i in 0..from {
            let range = KeyGroupRange::for_instance(64, from, i).unwrap();
            let mut op = Timed::default()
                .bind(backend())
                .unwrap()
                .with_key_groups(range)
                .unwrap()
                .with_timer_cache_size(2)
                .unwrap();
            fill(&mut op, Some(range));
            op.advance_watermark(40, |_, _| Ok(())).unwrap();
            pending.add(&op).unwrap();
        }
        pending.commit().unwrap();

        let mut fired = Vec::new();
        for i in 0..to {
            let range = KeyGroupRange::for_instance(64, to, i).unwrap();
            let mut op = Timed::default()
                .bind(backend())
                .unwrap()
                .with_key_groups(range)
                .unwrap()
                .with_timer_cache_size(2)
                .unwrap();
            op.restore_from(&storage, RestorePoint::Latest).unwrap();
            let mine = fire_all(&mut op);
            for (k, ..) in &mine {
                assert!(range.contains(key_group(&k.to_key_bytes(), 64)), "{k}");
            }
            // Fired in time order, then key, then namespace.
            let order: Vec<_> = mine
                .iter()
                .map(|(k, ns, ts, _)| (*ts, k.to_key_bytes(), *ns))
                .collect();
            let mut in_order = order.clone();
            in_order.sort();
            assert_eq!(order, in_order);
            fired.extend(mine);
        }
        // Each pending timer fired exactly once, on the instance that owns its key.
        let mut sorted = fired.clone();
        sorted.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(sorted, want, "{from} -> {to}");
    }
}

#[test]
fn the_timer_state_is_described_as_a_timer_service() {
    let d = Timed::DESCRIPTOR.state("timers").unwrap();
    assert_eq!(d.kind, StateKind::Timers);
    assert_eq!(d.kind.type_name(), "TimerService");
    assert_eq!(d.user_key_type, Some("(TimeDomain, i64, u32)"));
    // A stored timer with a domain tag no writer writes is refused by its validator.
    assert!((d.validate_user_key)(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!((d.validate_value)(&[1]).is_err());
    assert!((d.validate_value)(&[]).is_ok());
}

#[cfg(feature = "rocksdb")]
mod rocksdb {
    use super::*;
    use statewright::{RocksDbBackend, RocksDbOptions};

    fn rocks() -> RocksDbBackend {
        RocksDbBackend::open_temporary(RocksDbOptions::low_memory()).unwrap()
    }

    #[test]
    fn rocksdb_timers_behave_as_heap_timers() {
        let mut heap = Timed::default().bind(HeapBackend::new()).unwrap();
        let mut rocks = Timed::default().bind(rocks()).unwrap();
        fill(&mut heap, None);
        fill(&mut rocks, None);
        assert_eq!(fire_all(&mut rocks), fire_all(&mut heap));
    }

    /// Fires every event-time timer up to `to`; each fired timer at an even time of a key
    /// divisible by 3 registers another one 5 ms later (at an odd time, so once), which fires
    /// in the same call when due.
    fn fire_and_chain<B: AnyBackend + 'static>(
        op: &mut Bound<Plain, B>,
        to: i64,
    ) -> Vec<(i64, u64)> {
        let mut fired = Vec::new();
        op.advance_watermark(to, |t, mut st| {
            fired.push((t.timestamp, t.key));
            if t.key % 3 == 0 && t.timestamp % 2 == 0 {
                st.timers().register_event_time(t.timestamp + 5)?;
            }
            Ok(())
        })
        .unwrap();
        fired
    }

    #[test]
    fn rocksdb_holds_only_the_first_timers_of_each_key_group_in_memory() {
        use statewright::timers::CACHED_PER_GROUP;
        let mut heap = Plain::default().bind(HeapBackend::new()).unwrap();
        let mut op = Plain::default().bind(rocks()).unwrap();
        for i in 0..40_000u64 {
            let (key, ts) = (i % 5_000, ((i * 7_919) % 100_000) as i64);
            heap.key(&key)
                .unwrap()
                .timers()
                .register_event_time(ts)
                .unwrap();
            op.key(&key)
                .unwrap()
                .timers()
                .register_event_time(ts)
                .unwrap();
        }
        let total = heap.timer_count(TimeDomain::EventTime).unwrap();
        assert_eq!(op.timer_count(TimeDomain::EventTime).unwrap(), total);
        // 128 key groups of about 300 timers each: memory holds the first 128 of each.
        let bound = 128 * CACHED_PER_GROUP;
        assert!(total > bound, "{total}");
        assert!(op.timers_in_memory(TimeDomain::EventTime) <= bound);
        assert_eq!(heap.timers_in_memory(TimeDomain::EventTime), total);
        assert_eq!(
            op.next_timer(TimeDomain::EventTime),
            heap.next_timer(TimeDomain::EventTime)
        );
        // Half, with timers registered while firing, then the rest: the same timers in the
        // same order as the heap's.
        assert_eq!(
            fire_and_chain(&mut op, 50_000),
            fire_and_chain(&mut heap, 50_000)
        );
        assert!(op.timers_in_memory(TimeDomain::EventTime) <= bound);
        assert_eq!(
            op.timer_count(TimeDomain::EventTime).unwrap(),
            heap.timer_count(TimeDomain::EventTime).unwrap()
        );
        // Deleting timers that are only in RocksDB and some that are cached.
        for key in (0..5_000u64).step_by(7) {
            for ts in [60_000, 99_999, 50_001] {
                heap.key(&key)
                    .unwrap()
                    .timers()
                    .delete_event_time(ts)
                    .unwrap();
                op.key(&key)
                    .unwrap()
                    .timers()
                    .delete_event_time(ts)
                    .unwrap();
            }
        }
        let rest = fire_and_chain(&mut op, i64::MAX);
        assert_eq!(rest, fire_and_chain(&mut heap, i64::MAX));
        assert!(!rest.is_empty());
        assert_eq!(op.timer_count(TimeDomain::EventTime).unwrap(), 0);
        assert_eq!(op.timers_in_memory(TimeDomain::EventTime), 0);
    }

    #[test]
    fn a_database_switches_between_timers_in_memory_and_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let in_memory = RocksDbOptions::low_memory().timers_in_memory(true);
        let mut heap = Plain::default().bind(HeapBackend::new()).unwrap();
        {
            let mut op = Plain::default()
                .bind(RocksDbBackend::open(&path, in_memory.clone()).unwrap())
                .unwrap();
            for k in 0..2_000u64 {
                let ts = (k * 37 % 1_000) as i64;
                op.key(&k)
                    .unwrap()
                    .timers()
                    .register_event_time(ts)
                    .unwrap();
                heap.key(&k)
                    .unwrap()
                    .timers()
                    .register_event_time(ts)
                    .unwrap();
            }
            assert_eq!(op.timers_in_memory(TimeDomain::EventTime), 2_000);
        }
        {
            // Reopened in time order: the order is built from the stored timers.
            let mut op = Plain::default()
                .bind(RocksDbBackend::open(&path, RocksDbOptions::low_memory()).unwrap())
                .unwrap()
                .with_timer_cache_size(3)
                .unwrap();
            assert!(op.timers_in_memory(TimeDomain::EventTime) <= 128 * 3);
            assert_eq!(op.timer_count(TimeDomain::EventTime).unwrap(), 2_000);
            assert_eq!(fire_and_chain(&mut op, 400), fire_and_chain(&mut heap, 400));
        }
        // And back in memory: the timers still pending, once each.
        let mut op = Plain::default()
            .bind(RocksDbBackend::open(&path, in_memory).unwrap())
            .unwrap();
        let rest = fire_and_chain(&mut op, i64::MAX);
        assert_eq!(rest, fire_and_chain(&mut heap, i64::MAX));
        assert!(rest.len() > 1_000, "{}", rest.len());
    }

    #[test]
    fn timers_in_time_order_not_yet_read_survive_a_clean_close() {
        // Rows in time order wait in a buffer until a refill reads them or it holds 4 MiB:
        // 260,000 timers fill it more than once while they are registered, and the deletes
        // and registrations after the last refill are still in it when the database closes.
        // Opened again in the same mode, the database keeps its time order (no rebuild), so
        // it must hold every one of those writes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut heap = Plain::default().bind(HeapBackend::new()).unwrap();
        {
            let mut op = Plain::default()
                .bind(RocksDbBackend::open(&path, RocksDbOptions::low_memory()).unwrap())
                .unwrap();
            for i in 0..260_000u64 {
                let (key, ts) = (i % 40_000, ((i * 7_919) % 1_000_000) as i64);
                op.key(&key)
                    .unwrap()
                    .timers()
                    .register_event_time(ts)
                    .unwrap();
                heap.key(&key)
                    .unwrap()
                    .timers()
                    .register_event_time(ts)
                    .unwrap();
            }
            assert_eq!(
                fire_and_chain(&mut op, 300_000),
                fire_and_chain(&mut heap, 300_000)
            );
            for key in (0..40_000u64).step_by(11) {
                for b in [&mut op as &mut dyn TimerOps, &mut heap] {
                    b.delete(key, ((key * 7_919) % 1_000_000) as i64);
                    b.register(key, 999_000 + key as i64);
                }
            }
        }
        let mut op = Plain::default()
            .bind(RocksDbBackend::open(&path, RocksDbOptions::low_memory()).unwrap())
            .unwrap();
        assert_eq!(
            op.timer_count(TimeDomain::EventTime).unwrap(),
            heap.timer_count(TimeDomain::EventTime).unwrap()
        );
        let rest = fire_and_chain(&mut op, i64::MAX);
        assert_eq!(rest, fire_and_chain(&mut heap, i64::MAX));
        assert!(rest.len() > 150_000, "{}", rest.len());
    }

    /// Registering and deleting one key's event-time timer on either backend.
    trait TimerOps {
        fn register(&mut self, key: u64, ts: i64);
        fn delete(&mut self, key: u64, ts: i64);
    }

    impl<B: AnyBackend + 'static> TimerOps for Bound<Plain, B> {
        fn register(&mut self, key: u64, ts: i64) {
            self.key(&key)
                .unwrap()
                .timers()
                .register_event_time(ts)
                .unwrap();
        }

        fn delete(&mut self, key: u64, ts: i64) {
            self.key(&key)
                .unwrap()
                .timers()
                .delete_event_time(ts)
                .unwrap();
        }
    }

    #[test]
    fn timers_restore_from_the_heap_into_rocksdb_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path().join("heap")).unwrap();
        let mut heap = Timed::default().bind(HeapBackend::new()).unwrap();
        fill(&mut heap, None);
        heap.advance_watermark(100, |_, _| Ok(())).unwrap();
        heap.checkpoint(&storage).unwrap();
        let expected = fire_all(&mut heap);

        let mut rocks = Timed::default()
            .restore(rocks(), &storage, RestorePoint::Latest)
            .unwrap();
        let back = CheckpointStorage::open(dir.path().join("rocks")).unwrap();
        rocks.checkpoint(&back).unwrap();
        assert_eq!(fire_all(&mut rocks), expected);
        let mut heap_again = Timed::default()
            .restore(HeapBackend::new(), &back, RestorePoint::Latest)
            .unwrap();
        assert_eq!(fire_all(&mut heap_again), expected);
    }

    #[test]
    fn native_rocksdb_checkpoints_hold_timers() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkpointer =
            Checkpointer::new(CheckpointConfig::new(dir.path().join("checkpoints"))).unwrap();
        let mut op = Timed::default()
            .bind(
                RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap(),
            )
            .unwrap();
        fill(&mut op, None);
        let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
        assert_eq!(
            report.info.kind(),
            statewright::checkpoint::SnapshotKind::Native
        );
        let expected = fire_all(&mut op);
        drop(op);
        let mut restored = statewright::restore_native(
            Timed::default(),
            checkpointer.storage(),
            RestorePoint::Latest,
            KeyGroupRange::all(64),
            dir.path().join("restored"),
            RocksDbOptions::low_memory(),
        )
        .unwrap();
        assert_eq!(fire_all(&mut restored), expected);
    }
}

#[test]
fn a_failed_restore_leaves_the_timer_index_equal_to_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Timed::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, None);
    op.checkpoint(&storage).unwrap();
    // Damage every snapshot file of the checkpoint in its middle.
    let mut damaged = 0;
    for entry in walk(dir.path()) {
        if entry.extension().is_some_and(|e| e == "snap") {
            let mut bytes = std::fs::read(&entry).unwrap();
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 64] {
                *b ^= 0x5a;
            }
            std::fs::write(&entry, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let mut other = Timed::default().bind(HeapBackend::new()).unwrap();
    fill(&mut other, None);
    assert!(other.restore_from(&storage, RestorePoint::Latest).is_err());
    // Whatever the failure left in the backend, the index holds exactly that.
    let mut listed = 0;
    for i in 0..KEYS {
        listed += other
            .key(user(i).as_str())
            .unwrap()
            .timers()
            .list()
            .unwrap()
            .len();
    }
    assert_eq!(
        other.timer_count(TimeDomain::EventTime).unwrap()
            + other.timer_count(TimeDomain::ProcessingTime).unwrap(),
        listed
    );
    let mut fired = 0;
    other
        .advance_watermark(i64::MAX, |_, _| {
            fired += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(fired, other_count_before(listed, &other));
}

/// Event-time timers that fired are the listed ones minus the processing-time ones left.
fn other_count_before<B: StateBackend>(listed: usize, op: &Bound<Timed, B>) -> usize {
    listed - op.timer_count(TimeDomain::ProcessingTime).unwrap()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
