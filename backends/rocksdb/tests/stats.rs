//! Statistics and back pressure reflect what the backend holds and does.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright_rocksdb::{RocksDbBackend, RocksDbOptions};

#[derive(StatefulOperator, Default)]
#[operator(name = "stats", key = u64)]
struct Stats {
    value: ValueState<u64>,
    list: ListState<u64>,
}

#[test]
fn stats_follow_the_data() {
    // Without the row cache, so that every access reaches RocksDB's histograms.
    let backend = RocksDbBackend::open_temporary(
        RocksDbOptions::low_memory()
            .statistics(true)
            .row_cache_size(0),
    )
    .unwrap();
    let mut op = Stats::default().bind(backend).unwrap();
    let empty = op.backend().stats().unwrap();
    assert_eq!(empty.states.len(), 2);
    assert!(empty.states.iter().all(|s| s.estimated_keys == 0));

    for k in 0..20_000u64 {
        let mut st = op.key(&k).unwrap();
        st.value().set(&k).unwrap();
        st.list().add(&k).unwrap();
    }
    for k in 0..5_000u64 {
        op.key(&k).unwrap().value().get().unwrap();
    }
    let s = op.backend().stats().unwrap();
    assert!(s.memtable_bytes > 0);
    assert_eq!(
        s.memory_bytes,
        s.memtable_bytes + s.block_cache_bytes + s.table_readers_bytes + s.row_cache.bytes
    );
    assert!(s.writes_per_sec > 0.0 && s.reads_per_sec > 0.0);
    assert!((0.0..=1.0).contains(&s.back_pressure));
    let writes = s.write_latency.unwrap();
    assert!(writes.count >= 40_000, "{writes:?}");
    assert!(s.read_latency.unwrap().count >= 5_000);

    op.backend().flush().unwrap();
    let s = op.backend().publish_metrics().unwrap();
    let value = s
        .states
        .iter()
        .find(|s| s.column_family == "stats.value")
        .unwrap();
    assert!(
        value.estimated_keys > 15_000 && value.estimated_keys < 25_000,
        "{value:?}"
    );
}

#[test]
fn memory_pressure_rises_as_memtables_fill() {
    let options = RocksDbOptions::low_memory()
        .write_buffer_size(4 << 20)
        .row_cache_size(0);
    let backend = RocksDbBackend::open_temporary(options).unwrap();
    let mut op = Stats::default().bind(backend).unwrap();
    let before = op.backend().stats().unwrap().back_pressure;
    let payload: Vec<u64> = (0..64).collect();
    for k in 0..3_000u64 {
        op.key(&k).unwrap().list().add_all(&payload).unwrap();
    }
    let after = op.backend().stats().unwrap().back_pressure;
    assert!(after > before, "{before} -> {after}");
}
