//! The row cache in front of RocksDB: reads see every write whatever was evicted, memory stays
//! within the bound, checkpoints (canonical and native) hold writes that were only in the
//! cache, map iteration and list reads join cached and stored rows, cached rows expire with
//! their TTL, and a clean close writes the cache back.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use statewright::checkpoint::SnapshotKind;
use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::{ManualClock, TtlBackend};
use statewright_rocksdb::{RocksDbBackend, RocksDbOptions, restore_native};

#[derive(StatefulOperator, Default)]
#[operator(name = "rows", key = u64)]
struct Rows {
    value: ValueState<u64>,
    list: ListState<u64>,
    map: MapState<u32, u64>,
}

fn options(row_cache: usize) -> RocksDbOptions {
    RocksDbOptions::low_memory().row_cache_size(row_cache)
}

fn bound(row_cache: usize) -> Bound<Rows, RocksDbBackend> {
    Rows::default()
        .bind(RocksDbBackend::open_temporary(options(row_cache)).unwrap())
        .unwrap()
}

/// Round `r` of writes to key `k`, as the model below sees them.
fn write(op: &mut Bound<Rows, impl AnyBackend>, k: u64, r: u64) {
    let mut st = op.key(&k).unwrap();
    st.value().set(&(k * 100 + r)).unwrap();
    st.list().add(&r).unwrap();
    st.map().put(&((k + r) as u32 % 5), &r).unwrap();
    if r % 3 == 2 {
        st.map().remove(&((k + r + 1) as u32 % 5)).unwrap();
    }
}

#[derive(Default, Debug, PartialEq)]
struct Expected {
    value: Option<u64>,
    list: Vec<u64>,
    map: BTreeMap<u32, u64>,
}

fn model(k: u64, rounds: u64) -> Expected {
    let mut e = Expected::default();
    for r in 0..rounds {
        e.value = Some(k * 100 + r);
        e.list.push(r);
        e.map.insert((k + r) as u32 % 5, r);
        if r % 3 == 2 {
            e.map.remove(&((k + r + 1) as u32 % 5));
        }
    }
    e
}

fn read(op: &mut Bound<Rows, impl AnyBackend>, k: u64) -> Expected {
    let mut st = op.key(&k).unwrap();
    Expected {
        value: st.value().get_owned().unwrap(),
        list: st.list().get_owned().unwrap(),
        map: st
            .map()
            .entries()
            .unwrap()
            .map(|e| e.map(|(u, v)| (u, v.to_native())))
            .collect::<Result<_, _>>()
            .unwrap(),
    }
}

const KEYS: u64 = 5_000;
const ROUNDS: u64 = 4;

/// Writes `ROUNDS` rounds over `KEYS` keys, reading a third of the keys between rounds.
fn run(op: &mut Bound<Rows, impl AnyBackend>) {
    for r in 0..ROUNDS {
        for k in 0..KEYS {
            write(op, k, r);
            if k % 3 == 0 {
                assert_eq!(read(op, k), model(k, r + 1), "key {k} round {r}");
            }
        }
    }
}

#[test]
fn eviction_under_memory_pressure_loses_no_write() {
    let capacity = 64 << 10;
    let mut op = bound(capacity);
    run(&mut op);
    let s = op.backend().row_cache_stats();
    assert!(s.evictions > 10_000, "{s:?}");
    assert!(s.written_back > 10_000, "{s:?}");
    assert!(s.bytes <= capacity as u64, "{s:?}");
    for k in 0..KEYS {
        assert_eq!(read(&mut op, k), model(k, ROUNDS), "key {k}");
    }
    // Reads may overshoot the bound until the next key change evicts.
    let _ = op.key(&0).unwrap();
    assert!(op.backend().row_cache_stats().bytes <= capacity as u64);
    assert!(op.backend().stats().unwrap().row_cache.capacity_bytes == capacity as u64);
}

#[test]
fn every_cache_size_gives_the_same_state() {
    for capacity in [0, 4 << 10, 1 << 20, 64 << 20] {
        let mut op = bound(capacity);
        run(&mut op);
        for k in (0..KEYS).step_by(7) {
            assert_eq!(
                read(&mut op, k),
                model(k, ROUNDS),
                "cache {capacity}, key {k}"
            );
        }
    }
}

#[test]
fn hits_never_reach_rocksdb() {
    let mut op = bound(64 << 20);
    for k in 0..1_000 {
        op.key(&k).unwrap().value().set(&k).unwrap();
    }
    let before = op.backend().row_cache_stats();
    for _ in 0..3 {
        for k in 0..1_000 {
            assert_eq!(op.key(&k).unwrap().value().get_owned().unwrap(), Some(k));
        }
    }
    let after = op.backend().row_cache_stats();
    assert_eq!(after.hits - before.hits, 3_000);
    assert_eq!(after.misses, before.misses);
    // Nothing was written to RocksDB yet: the rows are dirty in the cache.
    assert_eq!(after.dirty_rows, 1_000);
    assert_eq!(after.written_back, 0);
}

/// The full checkpoint's restore, into the heap backend, holds exactly the model's state.
fn assert_restores(storage: &CheckpointStorage, rounds: u64) {
    let mut heap = Rows::default()
        .restore(HeapBackend::new(), storage, RestorePoint::Latest)
        .unwrap();
    for k in 0..KEYS {
        assert_eq!(read(&mut heap, k), model(k, rounds), "key {k}");
    }
}

#[test]
fn a_checkpoint_holds_writes_that_were_only_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = bound(64 << 20);
    run(&mut op);
    assert!(op.backend().row_cache_stats().dirty_rows > 0);
    op.checkpoint(&storage).unwrap();
    assert_eq!(op.backend().row_cache_stats().dirty_rows, 0);
    assert_restores(&storage, ROUNDS);

    // More rounds after the checkpoint; the restored RocksDB instance sees exactly the
    // checkpoint, not the writes after it.
    for k in 0..KEYS {
        write(&mut op, k, ROUNDS);
    }
    let mut restored = Rows::default()
        .restore(
            RocksDbBackend::open_temporary(options(1 << 20)).unwrap(),
            &storage,
            RestorePoint::Latest,
        )
        .unwrap();
    for k in (0..KEYS).step_by(11) {
        assert_eq!(read(&mut restored, k), model(k, ROUNDS), "key {k}");
    }
}

#[test]
fn the_dirty_bound_writes_back_while_processing_and_bounds_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let limit = 16 << 10;
    let mut op = Rows::default()
        .bind(
            RocksDbBackend::open_temporary(options(64 << 20).row_cache_dirty_limit(limit)).unwrap(),
        )
        .unwrap();
    let mut most = 0;
    for r in 0..ROUNDS {
        for k in 0..KEYS {
            write(&mut op, k, r);
            most = most.max(op.backend().row_cache_stats().dirty_bytes);
        }
    }
    let s = op.backend().row_cache_stats();
    // Nothing was evicted (the cache holds everything), yet rows went to RocksDB in batches
    // whenever the dirty ones passed the bound, and never more than a row past it.
    assert_eq!(s.evictions, 0, "{s:?}");
    assert!(s.written_back > KEYS, "{s:?}");
    assert!(most <= limit as u64 + 256, "{most}");
    assert!(s.dirty_rows > 0, "{s:?}");
    // The checkpoint writes back only what was dirty: at most the bound.
    op.checkpoint(&storage).unwrap();
    let after = op.backend().row_cache_stats();
    assert_eq!(after.dirty_rows, 0);
    assert_eq!(after.dirty_bytes, 0);
    assert_eq!(after.written_back - s.written_back, s.dirty_rows);
    assert_restores(&storage, ROUNDS);
    for k in (0..KEYS).step_by(7) {
        assert_eq!(read(&mut op, k), model(k, ROUNDS), "key {k}");
    }
}

#[test]
fn a_write_back_of_more_than_one_batch_writes_every_row() {
    // 400,000 dirty rows of about 24 bytes each in a write batch are more than twice one
    // write batch of written-back rows (4 MiB), so the checkpoint's write-back goes to
    // RocksDB in several sorted batches.
    let keys = 400_000u64;
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Rows::default()
        .bind(
            RocksDbBackend::open_temporary(options(256 << 20).row_cache_dirty_limit(256 << 20))
                .unwrap(),
        )
        .unwrap();
    for k in (0..keys).rev() {
        op.key(&k).unwrap().value().set(&(k * 3 + 1)).unwrap();
    }
    let s = op.backend().row_cache_stats();
    assert_eq!(s.dirty_rows, keys, "{s:?}");
    assert!(s.dirty_bytes > 8 << 20, "{s:?}");
    op.checkpoint(&storage).unwrap();
    let after = op.backend().row_cache_stats();
    assert_eq!(after.dirty_rows, 0);
    assert_eq!(after.written_back, keys);
    let mut heap = Rows::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    for k in 0..keys {
        assert_eq!(
            heap.key(&k).unwrap().value().get_owned().unwrap(),
            Some(k * 3 + 1),
            "key {k}"
        );
    }
}

#[test]
fn a_native_checkpoint_holds_writes_that_were_only_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::new(dir.path().join("checkpoints"))).unwrap();
    let mut op = Rows::default()
        .bind(RocksDbBackend::open(dir.path().join("db"), options(64 << 20)).unwrap())
        .unwrap();
    run(&mut op);
    assert!(op.backend().row_cache_stats().dirty_rows > 0);
    let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(report.info.kind(), SnapshotKind::Native);
    // Writes after the checkpoint stay out of it.
    for k in 0..KEYS {
        write(&mut op, k, ROUNDS);
    }
    drop(op);
    let mut restored = restore_native(
        Rows::default(),
        checkpointer.storage(),
        RestorePoint::Latest,
        KeyGroupRange::all(128),
        dir.path().join("restored"),
        options(1 << 20),
    )
    .unwrap();
    for k in 0..KEYS {
        assert_eq!(read(&mut restored, k), model(k, ROUNDS), "key {k}");
    }
}

#[test]
fn a_clean_close_writes_the_cache_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let mut op = Rows::default()
            .bind(RocksDbBackend::open(&db, options(64 << 20)).unwrap())
            .unwrap();
        run(&mut op);
        assert!(op.backend().row_cache_stats().dirty_rows > 0);
    }
    let mut op = Rows::default()
        .bind(RocksDbBackend::open(&db, options(64 << 20)).unwrap())
        .unwrap();
    for k in 0..KEYS {
        assert_eq!(read(&mut op, k), model(k, ROUNDS), "key {k}");
    }
}

/// Even keys below 100 cleared after three rounds, odd ones kept.
fn check_cleared(op: &mut Bound<Rows, impl AnyBackend>) {
    for k in 0..100 {
        let got = read(op, k);
        if k % 2 == 0 {
            assert_eq!(got, Expected::default(), "key {k}");
        } else {
            assert_eq!(got, model(k, 3), "key {k}");
        }
    }
}

#[test]
fn clearing_a_key_clears_its_cached_rows() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = bound(64 << 20);
    for k in 0..100 {
        write(&mut op, k, 0);
        write(&mut op, k, 1);
    }
    // Half the keys reach RocksDB before they are cleared, half are cleared in the cache.
    op.backend().flush().unwrap();
    for k in 0..100 {
        write(&mut op, k, 2);
    }
    for k in (0..100).step_by(2) {
        let mut st = op.key(&k).unwrap();
        st.value().clear().unwrap();
        st.list().clear().unwrap();
        st.map().clear().unwrap();
    }
    check_cleared(&mut op);
    op.checkpoint(&storage).unwrap();
    let mut heap = Rows::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    check_cleared(&mut heap);
}

#[derive(StatefulOperator, Default)]
#[operator(name = "expiring", key = u64)]
struct Expiring {
    #[state(ttl = "10s")]
    value: ValueState<u64>,
    #[state(ttl = "10s")]
    list: ListState<u64>,
}

#[test]
fn cached_rows_expire_with_their_ttl() {
    let clock = ManualClock::new(0);
    let backend = TtlBackend::with_clock(
        RocksDbBackend::open_temporary(options(64 << 20)).unwrap(),
        clock.clone(),
    );
    let mut op = Expiring::default().bind(backend).unwrap();
    for k in 0..100u64 {
        let mut st = op.key(&k).unwrap();
        st.value().set(&k).unwrap();
        st.list().add(&k).unwrap();
    }
    // Read once, so every row is a clean or dirty cache hit from here on.
    for k in 0..100u64 {
        assert_eq!(op.key(&k).unwrap().value().get_owned().unwrap(), Some(k));
    }
    clock.set(5_000);
    for k in 50..100u64 {
        op.key(&k).unwrap().list().add(&(k + 1)).unwrap();
    }
    clock.set(12_000);
    for k in 0..100u64 {
        let mut st = op.key(&k).unwrap();
        assert_eq!(st.value().get_owned().unwrap(), None, "key {k}");
        let list = st.list().get_owned().unwrap();
        if k < 50 {
            assert!(list.is_empty(), "key {k}: {list:?}");
        } else {
            assert_eq!(list, vec![k + 1], "key {k}");
        }
    }
    assert!(op.backend().inner().row_cache_stats().hits > 0);
}

#[test]
fn map_iteration_joins_cached_and_stored_entries() {
    let mut op = bound(16 << 10);
    let mut expected: BTreeMap<u64, BTreeMap<u32, u64>> = BTreeMap::new();
    for round in 0..6u64 {
        for k in 0..300u64 {
            let u = ((k * 7 + round * 13) % 40) as u32;
            op.key(&k).unwrap().map().put(&u, &round).unwrap();
            expected.entry(k).or_default().insert(u, round);
            if round % 2 == 1 {
                let gone = ((k + round) % 40) as u32;
                op.key(&k).unwrap().map().remove(&gone).unwrap();
                expected.entry(k).or_default().remove(&gone);
            }
            // Point reads in between cache some entries, absent ones included.
            let probe = ((k + round * 3) % 40) as u32;
            assert_eq!(
                op.key(&k).unwrap().map().get_owned(&probe).unwrap(),
                expected[&k].get(&probe).copied()
            );
        }
    }
    for (k, entries) in &expected {
        let mut st = op.key(k).unwrap();
        let got: BTreeMap<u32, u64> = st
            .map()
            .entries()
            .unwrap()
            .map(|e| e.map(|(u, v)| (u, v.to_native())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(&got, entries, "key {k}");
        assert_eq!(st.map().len().unwrap(), entries.len());
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "timed", key = u64)]
struct Timed {
    timers: TimerService,
}

/// The timers a run of `timers_are_written_back_...` leaves: keys 500..1000 but 701, two each.
fn remaining_timers() -> Vec<(i64, u64)> {
    (500..1_000u64)
        .filter(|&k| k != 701)
        .flat_map(|k| [(k as i64 * 10, k), (k as i64 * 10 + 5, k)])
        .collect()
}

fn fire_all<B: AnyBackend + 'static>(op: &mut Bound<Timed, B>) -> Vec<(i64, u64)> {
    let mut fired = Vec::new();
    op.advance_watermark(i64::MAX, |t, _| {
        fired.push((t.timestamp, t.key));
        Ok(())
    })
    .unwrap();
    fired
}

#[test]
fn timers_stay_out_of_the_row_cache_and_lists_checkpoints_and_restores_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = Timed::default()
        .bind(RocksDbBackend::open_temporary(options(64 << 20)).unwrap())
        .unwrap();
    for k in 0..1_000u64 {
        let mut st = op.key(&k).unwrap();
        st.timers().register_event_time(k as i64 * 10).unwrap();
        st.timers().register_event_time(k as i64 * 10 + 5).unwrap();
        // A second registration of the same timer leaves one.
        st.timers().register_event_time(k as i64 * 10).unwrap();
    }
    // A timer is one row in time order, buffered and written in key order: none reaches the
    // row cache, which the other states keep for themselves.
    let s = op.backend().row_cache_stats();
    assert_eq!((s.rows, s.dirty_rows, s.written_back), (0, 0, 0), "{s:?}");
    // Keys 0..500 have both timers at or before 4,999.
    let fired = op.advance_watermark(4_999, |_, _| Ok(())).unwrap();
    assert_eq!(fired, 1_000);
    assert_eq!(op.backend().row_cache_stats().rows, 0);
    // A key's list reads its key group's timers in time order.
    assert_eq!(
        op.key(&700).unwrap().timers().list().unwrap(),
        vec![
            (TimeDomain::EventTime, 7_000, ()),
            (TimeDomain::EventTime, 7_005, ())
        ]
    );
    assert_eq!(op.backend().row_cache_stats().dirty_rows, 0);
    assert!(op.key(&10).unwrap().timers().list().unwrap().is_empty());
    op.key(&701).unwrap().timers().clear().unwrap();
    assert!(op.key(&701).unwrap().timers().list().unwrap().is_empty());
    op.checkpoint(&storage).unwrap();
    // Timers registered after the checkpoint stay out of it.
    op.key(&5).unwrap().timers().register_event_time(1).unwrap();

    let mut heap = Timed::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(heap.timer_count(TimeDomain::EventTime).unwrap(), 998);
    assert_eq!(fire_all(&mut heap), remaining_timers());
    let mut rocks = Timed::default()
        .restore(
            RocksDbBackend::open_temporary(options(1 << 20)).unwrap(),
            &storage,
            RestorePoint::Latest,
        )
        .unwrap();
    assert_eq!(fire_all(&mut rocks), remaining_timers());
    assert_eq!(rocks.timer_count(TimeDomain::EventTime).unwrap(), 0);
    let mut expected = vec![(1, 5)];
    expected.extend(remaining_timers());
    assert_eq!(fire_all(&mut op), expected);
}
