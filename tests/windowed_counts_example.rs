//! The `windowed_counts` example on a small stream: the count of every window as it fired
//! last equals a plain count with the lateness rule spelled out, late clicks within the
//! lateness made their windows fire again, later ones were dropped, and no timer is left.
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/windowed_counts.rs"]
mod windowed_counts;

use std::collections::BTreeMap;

use statewright::HeapBackend;

fn check(summary: &windowed_counts::Summary, clicks: u64) {
    let (expected, dropped) = windowed_counts::reference(clicks);
    assert_eq!(windowed_counts::final_counts(&summary.fired), expected);
    assert_eq!(summary.dropped, dropped);
    assert!(dropped > 0, "the stream has clicks later than the lateness");
    assert_eq!(summary.timers_left, 0);
    // Late clicks within the lateness: some windows fired more than once, each time with a
    // larger count, and every window fired at least once.
    let mut seen: BTreeMap<_, u64> = BTreeMap::new();
    let mut refired = 0;
    for f in &summary.fired {
        if let Some(before) = seen.insert((f.user, f.window), f.count) {
            assert!(f.count > before, "{f:?} after {before}");
            refired += 1;
        }
    }
    assert!(refired > 0);
    assert_eq!(seen.len(), expected.len());
}

#[test]
fn windows_equal_a_plain_count_with_the_lateness_rule() {
    let clicks = 40_000;
    let summary = windowed_counts::run(clicks, HeapBackend::new()).unwrap();
    check(&summary, clicks);
}

#[cfg(feature = "rocksdb")]
#[test]
fn windows_equal_a_plain_count_on_rocksdb() {
    let clicks = 20_000;
    let db = statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory())
        .unwrap();
    let summary = windowed_counts::run(clicks, db).unwrap();
    check(&summary, clicks);
}
