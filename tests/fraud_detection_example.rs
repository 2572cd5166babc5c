//! The `fraud_detection` example, on a small stream: the restored run equals the
//! uninterrupted one.
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/fraud_detection.rs"]
mod fraud_detection;

#[test]
fn restored_run_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let heap = fraud_detection::Backend::Heap;
    let expected = fraud_detection::uninterrupted(5_000, heap, dir.path()).unwrap();
    let recovery = fraud_detection::with_crash(5_000, heap, dir.path()).unwrap();
    assert!(
        !expected.alerts.is_empty(),
        "the stream should raise alerts"
    );
    assert!(recovery.replayed > 0);
    assert!(
        recovery.expired > 0,
        "a tiny charge counts for one minute of event time; the run spans four"
    );
    assert_eq!(recovery.outcome, expected);
}

#[test]
fn a_lost_checkpoint_would_be_noticed() {
    // The comparison is strict: a run that skips the replayed events differs.
    let dir = tempfile::tempdir().unwrap();
    let heap = fraud_detection::Backend::Heap;
    let a = fraud_detection::uninterrupted(5_000, heap, dir.path()).unwrap();
    let b = fraud_detection::uninterrupted(4_999, heap, dir.path()).unwrap();
    assert_ne!(a.final_state, b.final_state);
}

#[cfg(feature = "rocksdb")]
#[test]
fn restored_run_matches_on_rocksdb_and_equals_the_heap_run() {
    let dir = tempfile::tempdir().unwrap();
    let heap =
        fraud_detection::uninterrupted(5_000, fraud_detection::Backend::Heap, dir.path()).unwrap();
    let rocks = fraud_detection::Backend::RocksDb;
    let recovery = fraud_detection::with_crash(5_000, rocks, dir.path()).unwrap();
    // RocksDB's default checkpoints are native ones; the TTL operator restores from them.
    assert_eq!(
        recovery.checkpoint.kind(),
        statewright::checkpoint::SnapshotKind::Native
    );
    assert!(recovery.expired > 0, "event time goes on after the restore");
    // Same alerts and byte-identical canonical state as the uninterrupted heap run.
    assert_eq!(recovery.outcome, heap);
}
