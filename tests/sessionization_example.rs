//! The `sessionization` example on a small stream: the sessions merging session windows emit
//! equal those of the gap rule spelled out over a `HashMap`, each emitted once its gap closed,
//! and no state or timer is left once the watermark passed them all.
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/sessionization.rs"]
mod sessionization;

use sessionization::{GAP_MS, nth_click, sorted};
use statewright::HeapBackend;

fn check(summary: &sessionization::Summary, clicks: u64) {
    let expected = sessionization::reference(clicks);
    assert_eq!(sorted(&summary.sessions), sorted(&expected));
    assert_eq!(summary.totals, sessionization::totals_of(&expected));
    assert_eq!(summary.timers_left, 0);
    // Returning users start new sessions: more sessions than users.
    assert!(summary.sessions.len() > summary.totals.len());
    // Each session was emitted once its gap closed, before any click at or after that time:
    // the sessions before the final flush closed in time order of their gaps.
    let flushed = summary.open_at_end;
    let in_stream = &summary.sessions[..summary.sessions.len() - flushed];
    let last_click = nth_click(clicks - 1).1;
    for pair in in_stream.windows(2) {
        assert!(pair[0].last_ms <= pair[1].last_ms, "{pair:?}");
    }
    for s in in_stream {
        assert!(s.last_ms + GAP_MS <= last_click, "{s:?}");
    }
    for s in &summary.sessions[summary.sessions.len() - flushed..] {
        assert!(s.last_ms + GAP_MS > last_click, "{s:?}");
    }
}

#[test]
fn session_windows_equal_the_gap_rule() {
    let clicks = 60_000; // 3 hours and 20 minutes of event time
    let summary = sessionization::run(clicks, HeapBackend::new()).unwrap();
    check(&summary, clicks);
}

#[cfg(feature = "rocksdb")]
#[test]
fn session_windows_equal_the_gap_rule_on_rocksdb() {
    let clicks = 30_000;
    let db = statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory())
        .unwrap();
    let summary = sessionization::run(clicks, db).unwrap();
    check(&summary, clicks);
}
