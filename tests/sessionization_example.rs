//! The `sessionization` example on a small stream: the sessions event-time TTL finds equal
//! those of the gap rule spelled out over a `HashMap`, and expired sessions leave the state.
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/sessionization.rs"]
mod sessionization;

use statewright::HeapBackend;

#[test]
fn ttl_sessions_equal_the_gap_rule() {
    let clicks = 60_000; // 3 hours and 20 minutes of event time
    let summary = sessionization::run(clicks, HeapBackend::new()).unwrap();
    let expected = sessionization::reference(clicks);
    assert_eq!(summary.totals, expected);
    let sessions: u64 = expected.values().map(|t| t.sessions).sum();
    // Returning users start new sessions: more sessions than users.
    assert!(sessions > expected.len() as u64, "{sessions} sessions");
    // Users of earlier windows are gone from the open sessions.
    assert!(summary.open < expected.len() as u64);
    assert!(summary.expired > 0);
}

#[cfg(feature = "rocksdb")]
#[test]
fn ttl_sessions_equal_the_gap_rule_on_rocksdb() {
    let clicks = 30_000;
    let db = statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory())
        .unwrap();
    let summary = sessionization::run(clicks, db).unwrap();
    assert_eq!(summary.totals, sessionization::reference(clicks));
}
