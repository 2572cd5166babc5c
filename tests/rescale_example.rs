//! The `rescale` example on a small stream: after 2 -> 3 (and 3 -> 1, 1 -> 4) every user's
//! state equals an unpartitioned run, and every view is counted exactly once.
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/rescale.rs"]
mod rescale;

#[test]
fn rescaled_state_equals_an_unpartitioned_run() {
    for (from, to) in [(2, 3), (3, 1), (1, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let summary = rescale::run(20_000, from, to, rescale::Backend::Heap, dir.path()).unwrap();
        assert_eq!(summary.users, 2_000, "{from} -> {to}");
        assert_eq!(summary.mismatched, 0, "{from} -> {to}");
        // Every view counted once, before or after the rescale, by exactly one instance.
        assert_eq!(summary.views, 20_000, "{from} -> {to}");
        assert_eq!(summary.plan.len(), usize::from(to));
        // Every key group is read, by exactly one new instance.
        let covered: u32 = summary
            .plan
            .iter()
            .map(|(r, _)| u32::from(r.last()) - u32::from(r.first()) + 1)
            .sum();
        assert_eq!(covered, 128);
    }
}

#[cfg(feature = "rocksdb")]
#[test]
fn rescaled_native_rocksdb_state_equals_an_unpartitioned_run() {
    let dir = tempfile::tempdir().unwrap();
    let summary = rescale::run(20_000, 2, 3, rescale::Backend::RocksDb, dir.path()).unwrap();
    assert_eq!(summary.mismatched, 0);
    assert_eq!(summary.users, 2_000);
    assert_eq!(summary.views, 20_000);
}
