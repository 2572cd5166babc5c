//! Time-to-live with a manual clock and a manual watermark: every option combination for value,
//! list and map state in both time modes, on the heap backend and on RocksDB; cleanup; and
//! restores that keep time, including restores that add or remove a TTL.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use statewright::prelude::*;
use statewright::snapshot::SnapshotOptions;
use statewright::{Error, Snapshots};
use statewright::{ManualClock, TtlBackend};

const SEC: i64 = 1_000;

/// Moves the state's time forward: the clock in processing time, the watermark in event time.
struct Time {
    clock: ManualClock,
    event: bool,
}

impl Time {
    fn new(event: bool) -> Self {
        Self {
            clock: ManualClock::new(0),
            event,
        }
    }

    /// Incremental cleanup is off, so what a read sees depends on reads alone (it has its own
    /// test below).
    fn backend<B: AnyBackend>(&self, inner: B) -> TtlBackend<B> {
        let b = TtlBackend::with_clock(inner, self.clock.clone()).with_incremental_cleanup(0, 1);
        if self.event {
            b.set_watermark(0);
        }
        b
    }

    fn set<B: AnyBackend>(&self, b: &TtlBackend<B>, ms: i64) {
        self.clock.set(ms);
        b.set_watermark(ms);
    }
}

fn heap() -> HeapBackend {
    HeapBackend::new()
}

#[cfg(feature = "rocksdb")]
fn rocksdb() -> statewright::RocksDbBackend {
    statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory()).unwrap()
}

/// One operator per option combination, each with a value, a list and a map state that live
/// ten seconds, and the same scenario run against it.
macro_rules! combination {
    ($module:ident, $update:tt, $visibility:tt, $time:tt) => {
        mod $module {
            use super::*;

            #[derive(StatefulOperator, Default)]
            #[operator(name = "ttl", key = u32)]
            struct Op {
                #[state(ttl = "10s", update = $update, visibility = $visibility, time = $time)]
                value: ValueState<u64>,
                #[state(ttl = "10s", update = $update, visibility = $visibility, time = $time)]
                list: ListState<u64>,
                #[state(ttl = "10s", update = $update, visibility = $visibility, time = $time)]
                map: MapState<u32, u64>,
            }

            fn run<B: AnyBackend>(inner: B) {
                let on_read = $update == "on_read_and_write";
                let return_expired = $visibility == "return_expired_if_not_cleaned_up";
                let time = Time::new($time == "event");
                let mut op = Op::default().bind(time.backend(inner)).unwrap();

                // t = 0: one of each.
                let mut st = op.key(&1).unwrap();
                st.value().set(&1).unwrap();
                st.list().add(&1).unwrap();
                st.map().put(&1, &1).unwrap();

                // t = 6 s: everything is alive; reads refresh stamps under on_read_and_write.
                time.set(op.backend(), 6 * SEC);
                let mut st = op.key(&1).unwrap();
                assert_eq!(st.value().get_owned().unwrap(), Some(1));
                assert_eq!(st.list().get_owned().unwrap(), vec![1]);
                assert_eq!(st.map().get_owned(&1).unwrap(), Some(1));
                st.list().add(&2).unwrap();
                st.map().put(&2, &2).unwrap();

                // t = 11 s: what was written at 0 and not read since has expired; what was
                // written (or, under on_read_and_write, read) at 6 s lives.
                time.set(op.backend(), 11 * SEC);
                let first_alive = on_read;
                let first_seen = first_alive || return_expired;
                let mut st = op.key(&1).unwrap();
                let value = st.value().get_owned().unwrap();
                let list = st.list().get_owned().unwrap();
                let map: Vec<(u32, u64)> = st
                    .map()
                    .entries()
                    .unwrap()
                    .map(|e| e.map(|(k, v)| (k, v.to_native())))
                    .collect::<statewright::Result<_>>()
                    .unwrap();
                assert_eq!(value, first_seen.then_some(1));
                assert_eq!(list, if first_seen { vec![1, 2] } else { vec![2] });
                let mut want_map = vec![(2, 2)];
                if first_seen {
                    want_map.insert(0, (1, 1));
                }
                assert_eq!(map, want_map);

                // Next key change: an expired value returned once is gone now.
                let mut st = op.key(&1).unwrap();
                assert_eq!(st.value().get_owned().unwrap(), first_alive.then_some(1));
                let want_list = if first_alive { vec![1, 2] } else { vec![2] };
                assert_eq!(st.list().get_owned().unwrap(), want_list);
                assert_eq!(st.map().contains(&1).unwrap(), first_alive);
                assert_eq!(st.map().len().unwrap(), if first_alive { 2 } else { 1 });

                // t = 30 s: everything has expired, in every mode, once cleaned up.
                time.set(op.backend(), 30 * SEC);
                for _ in 0..2 {
                    let mut st = op.key(&1).unwrap();
                    let _ = st.value().get_owned().unwrap();
                    let _ = st.list().get_owned().unwrap();
                    let _ = st.map().len().unwrap();
                }
                let mut st = op.key(&1).unwrap();
                assert_eq!(st.value().get_owned().unwrap(), None);
                assert!(st.list().get_owned().unwrap().is_empty());
                assert!(st.list().is_empty().unwrap());
                assert!(st.map().is_empty().unwrap());

                // A write after expiry starts a new life.
                st.value().set(&5).unwrap();
                time.set(op.backend(), 39 * SEC);
                assert_eq!(op.key(&1).unwrap().value().get_owned().unwrap(), Some(5));
                time.set(op.backend(), 40 * SEC);
                // The read at 39 s refreshed the stamp under on_read_and_write.
                let once = op.key(&1).unwrap().value().get_owned().unwrap();
                assert_eq!(once, (on_read || return_expired).then_some(5));
                let again = op.key(&1).unwrap().value().get_owned().unwrap();
                assert_eq!(again, on_read.then_some(5));

                let expired: u64 = op.backend().ttl_stats().iter().map(|s| s.total()).sum();
                assert!(expired >= 4, "removals are counted: {expired}");
            }

            #[test]
            fn heap() {
                run(super::heap());
            }

            #[cfg(feature = "rocksdb")]
            #[test]
            fn rocksdb() {
                run(super::rocksdb());
            }
        }
    };
}

combination!(
    write_never_processing,
    "on_create_and_write",
    "never_return_expired",
    "processing"
);
combination!(
    write_never_event,
    "on_create_and_write",
    "never_return_expired",
    "event"
);
combination!(
    write_return_processing,
    "on_create_and_write",
    "return_expired_if_not_cleaned_up",
    "processing"
);
combination!(
    write_return_event,
    "on_create_and_write",
    "return_expired_if_not_cleaned_up",
    "event"
);
combination!(
    read_never_processing,
    "on_read_and_write",
    "never_return_expired",
    "processing"
);
combination!(
    read_never_event,
    "on_read_and_write",
    "never_return_expired",
    "event"
);
combination!(
    read_return_processing,
    "on_read_and_write",
    "return_expired_if_not_cleaned_up",
    "processing"
);
combination!(
    read_return_event,
    "on_read_and_write",
    "return_expired_if_not_cleaned_up",
    "event"
);

/// The same operator and states, declared with and without a TTL.
mod sessions {
    use super::*;

    #[derive(StatefulOperator, Default)]
    #[operator(name = "sessions", key = u64)]
    pub struct WithTtl {
        #[state(ttl = "10s")]
        pub last: ValueState<u64>,
        #[state(ttl = "10s")]
        pub clicks: ListState<u32>,
        #[state(ttl = "10s")]
        pub pages: MapState<u32, u64>,
    }

    #[derive(StatefulOperator, Default)]
    #[operator(name = "sessions", key = u64)]
    pub struct WithoutTtl {
        pub last: ValueState<u64>,
        pub clicks: ListState<u32>,
        pub pages: MapState<u32, u64>,
    }
}
use sessions::{WithTtl, WithoutTtl};

fn fill_with_ttl<B: Snapshots>(op: &mut Bound<WithTtl, B>, keys: std::ops::Range<u64>) {
    for k in keys {
        let mut st = op.key(&k).unwrap();
        st.last().set(&k).unwrap();
        st.clicks().add_all([&1, &2]).unwrap();
        st.pages().put(&7, &k).unwrap();
    }
}

fn fill_without_ttl<B: Snapshots>(op: &mut Bound<WithoutTtl, B>, keys: std::ops::Range<u64>) {
    for k in keys {
        let mut st = op.key(&k).unwrap();
        st.last().set(&k).unwrap();
        st.clicks().add_all([&1, &2]).unwrap();
        st.pages().put(&7, &k).unwrap();
    }
}

/// [`WithTtl`] on the heap backend with `clock`, checking `cleanup` entries per key change.
fn on_heap(clock: &ManualClock, cleanup: usize) -> Bound<WithTtl, TtlBackend<HeapBackend>> {
    let backend = TtlBackend::with_clock(HeapBackend::new(), clock.clone());
    WithTtl::default()
        .bind(backend.with_incremental_cleanup(cleanup, 1))
        .unwrap()
}

fn alive<B: Snapshots>(op: &mut Bound<WithTtl, B>, k: u64) -> (Option<u64>, usize, usize) {
    let mut st = op.key(&k).unwrap();
    (
        st.last().get_owned().unwrap(),
        st.clicks().len().unwrap(),
        st.pages().len().unwrap(),
    )
}

/// [`WithTtl`] on `inner`, with `clock` for processing time.
fn with_ttl<B: AnyBackend>(inner: B, clock: &ManualClock) -> Bound<WithTtl, TtlBackend<B>> {
    WithTtl::default()
        .bind(TtlBackend::with_clock(inner, clock.clone()))
        .unwrap()
}

fn restore_keeps_time<B: AnyBackend>(make: impl Fn() -> B) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let clock = ManualClock::new(0);
    let mut op = with_ttl(make(), &clock);
    fill_with_ttl(&mut op, 0..50);
    clock.set(4 * SEC);
    fill_with_ttl(&mut op, 50..100);
    clock.set(8 * SEC);
    op.checkpoint(&storage).unwrap();

    // Restored at 8 s: the stamps are the original ones, so the first 50 keys die at 10 s,
    // not 10 s after the restore.
    let mut back = WithTtl::default()
        .restore(
            TtlBackend::with_clock(make(), clock.clone()),
            &storage,
            RestorePoint::Latest,
        )
        .unwrap();
    assert_eq!(alive(&mut back, 3), (Some(3), 2, 1));
    clock.set(10 * SEC);
    assert_eq!(alive(&mut back, 3), (None, 0, 0));
    assert_eq!(alive(&mut back, 60), (Some(60), 2, 1));
    clock.set(14 * SEC);
    assert_eq!(alive(&mut back, 60), (None, 0, 0));

    // A restore after expiry leaves the expired data out.
    let mut late = WithTtl::default()
        .restore(
            TtlBackend::with_clock(make(), clock.clone()),
            &storage,
            RestorePoint::Latest,
        )
        .unwrap();
    let restored: u64 = late
        .backend()
        .ttl_stats()
        .iter()
        .map(|s| s.at_restore)
        .sum();
    assert_eq!(
        restored,
        100 * 4,
        "every value, list element and map entry had expired"
    );
    assert_eq!(alive(&mut late, 60), (None, 0, 0));
}

fn ttl_added_at_restore<B: AnyBackend>(make: impl Fn() -> B) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut plain = WithoutTtl::default().bind(make()).unwrap();
    fill_without_ttl(&mut plain, 0..20);
    plain.checkpoint(&storage).unwrap();

    // Written without a TTL, restored with one: stamped at restore time.
    let clock = ManualClock::new(100 * SEC);
    let mut op = WithTtl::default()
        .restore(
            TtlBackend::with_clock(make(), clock.clone()),
            &storage,
            RestorePoint::Latest,
        )
        .unwrap();
    clock.set(109 * SEC);
    assert_eq!(alive(&mut op, 5), (Some(5), 2, 1));
    clock.set(110 * SEC);
    assert_eq!(alive(&mut op, 5), (None, 0, 0));
}

fn ttl_removed_at_restore<B: AnyBackend>(make: impl Fn() -> B) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let clock = ManualClock::new(0);
    let mut op = with_ttl(make(), &clock);
    fill_with_ttl(&mut op, 0..20);
    op.checkpoint(&storage).unwrap();

    // Written with a TTL, restored without: the stamps are gone, the values are intact.
    let mut plain = WithoutTtl::default()
        .restore(make(), &storage, RestorePoint::Latest)
        .unwrap();
    let mut st = plain.key(&5).unwrap();
    assert_eq!(st.last().get_owned().unwrap(), Some(5));
    assert_eq!(st.clicks().get_owned().unwrap(), vec![1, 2]);
    assert_eq!(st.pages().get_owned(&7).unwrap(), Some(5));

    // And back again: a checkpoint of the plain state restores into the TTL operator, stamped
    // at that restore.
    plain.checkpoint(&storage).unwrap();
    clock.set(50 * SEC);
    let mut again = WithTtl::default()
        .restore(
            TtlBackend::with_clock(make(), clock.clone()),
            &storage,
            RestorePoint::Latest,
        )
        .unwrap();
    assert_eq!(alive(&mut again, 5), (Some(5), 2, 1));
}

#[test]
fn heap_restore_keeps_time() {
    restore_keeps_time(heap);
}

#[test]
fn heap_ttl_added_at_restore() {
    ttl_added_at_restore(heap);
}

#[test]
fn heap_ttl_removed_at_restore() {
    ttl_removed_at_restore(heap);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_restore_keeps_time() {
    restore_keeps_time(rocksdb);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_ttl_added_at_restore() {
    ttl_added_at_restore(rocksdb);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_ttl_removed_at_restore() {
    ttl_removed_at_restore(rocksdb);
}

#[test]
fn a_ttl_state_on_a_backend_that_does_not_enforce_it_is_an_error() {
    let err = WithTtl::default().bind(HeapBackend::new()).unwrap_err();
    assert!(matches!(
        err,
        Error::TtlNotEnforced {
            operator: "sessions",
            state: "last",
            backend: "heap"
        }
    ));
    assert!(
        err.to_string().contains("TtlBackend::new(backend)"),
        "{err}"
    );
    // States without a TTL do not need the wrapper.
    WithoutTtl::default().bind(HeapBackend::new()).unwrap();
}

mod event {
    use super::*;

    #[derive(StatefulOperator, Default)]
    #[operator(name = "windows", key = u64)]
    pub struct Windows {
        #[state(ttl = "1m", time = "event")]
        pub open: ValueState<u64>,
    }
}

#[test]
fn event_time_needs_a_watermark_before_the_first_write() {
    let mut op = event::Windows::default()
        .bind(TtlBackend::new(HeapBackend::new()))
        .unwrap();
    // Reads before the first watermark see what is stored; nothing expires yet.
    assert_eq!(op.key(&1).unwrap().open().get_owned().unwrap(), None);
    let err = op.key(&1).unwrap().open().set(&1).unwrap_err();
    assert!(
        err.to_string().contains("before the first watermark"),
        "{err}"
    );
    op.backend().set_watermark(1_000);
    op.key(&1).unwrap().open().set(&1).unwrap();
    // Watermarks never go back.
    op.backend().set_watermark(10);
    assert_eq!(op.backend().watermark(), Some(1_000));
    op.backend().set_watermark(61_000);
    assert_eq!(op.key(&1).unwrap().open().get_owned().unwrap(), None);
}

#[test]
fn snapshots_leave_expired_data_out() {
    let clock = ManualClock::new(0);
    let mut op = WithTtl::default()
        .bind(TtlBackend::with_clock(HeapBackend::new(), clock.clone()))
        .unwrap();
    fill_with_ttl(&mut op, 0..10);
    clock.set(5 * SEC);
    fill_with_ttl(&mut op, 10..15);
    clock.set(12 * SEC);
    let mut bytes = Vec::new();
    let summary = op
        .write_snapshot(
            SnapshotOptions::default(),
            std::path::Path::new("mem"),
            &mut bytes,
        )
        .unwrap();
    // Five keys alive, each with a value, a list (one entry) and a map entry.
    assert_eq!(summary.entries, 5 * 3);
}

#[test]
fn incremental_cleanup_removes_expired_entries_nobody_reads() {
    let clock = ManualClock::new(0);
    let mut op = on_heap(&clock, 10);
    fill_with_ttl(&mut op, 0..1_000);
    assert_eq!(op.backend().inner().entries(), 3_000);
    clock.set(20 * SEC);
    // Touch one key over and over: every key change checks ten entries of one state.
    for _ in 0..400 {
        let _ = op.key(&5_000).unwrap();
    }
    assert_eq!(op.backend().inner().entries(), 0);
    let cleaned: u64 = op.backend().ttl_stats().iter().map(|s| s.by_cleanup).sum();
    // Values and map entries count one each, lists count their two elements.
    assert_eq!(cleaned, 4_000);

    // Turned off, nothing is removed without a read.
    let mut off = on_heap(&clock, 0);
    fill_with_ttl(&mut off, 0..100);
    clock.set(40 * SEC);
    for _ in 0..400 {
        let _ = off.key(&5_000).unwrap();
    }
    assert_eq!(off.backend().inner().entries(), 300);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_compaction_drops_expired_entries() {
    let clock = ManualClock::new(0);
    let backend = TtlBackend::with_clock(rocksdb(), clock.clone()).with_incremental_cleanup(0, 1);
    let mut op = WithTtl::default().bind(backend).unwrap();
    for k in 0..1_000u64 {
        let mut st = op.key(&k).unwrap();
        st.last().set(&k).unwrap();
        st.pages().put(&1, &k).unwrap();
        st.pages().put(&2, &k).unwrap();
        // Written whole (not appended), so compactions see one value per list.
        st.clicks().update(&[1, 2, 3]).unwrap();
    }
    clock.set(5 * SEC);
    for k in 0..100u64 {
        op.key(&k).unwrap().last().set(&k).unwrap();
    }
    op.backend().inner().flush().unwrap();
    let count = |op: &Bound<WithTtl, TtlBackend<statewright::RocksDbBackend>>, cf: &str| {
        let db = op.backend().inner().db();
        let mut it = db.raw_iterator_cf(db.cf_handle(cf).unwrap());
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        n
    };
    assert_eq!(count(&op, "sessions.last"), 1_000);
    assert_eq!(count(&op, "sessions.pages"), 2_000);

    clock.set(12 * SEC); // the first writes have expired, the rewritten 100 values have not
    op.backend().inner().compact().unwrap();
    assert_eq!(count(&op, "sessions.last"), 100);
    assert_eq!(count(&op, "sessions.pages"), 0);
    assert_eq!(count(&op, "sessions.clicks"), 0);

    let stats = op.backend().ttl_stats();
    let compacted: u64 = stats.iter().map(|s| s.in_compaction).sum();
    assert_eq!(compacted, 900 + 2_000 + 3_000);
    let rocks = op.backend().inner().stats().unwrap();
    let last = rocks
        .states
        .iter()
        .find(|s| s.column_family == "sessions.last")
        .unwrap();
    assert_eq!(last.ttl_expired_in_compaction, 900);
    assert_eq!(alive(&mut op, 50), (Some(50), 0, 0));
    assert_eq!(alive(&mut op, 500), (None, 0, 0));
}

#[test]
fn ttl_stats_reach_the_metrics_facade() {
    let clock = ManualClock::new(0);
    let mut op = on_heap(&clock, 0);
    fill_with_ttl(&mut op, 0..3);
    clock.set(11 * SEC);
    for k in 0..3 {
        let _ = alive(&mut op, k);
    }
    let _ = op.key(&0).unwrap(); // applies the removals the reads found
    let stats = op.backend().ttl_stats();
    let last = stats.iter().find(|s| s.state == "sessions.last").unwrap();
    assert_eq!(last.on_access, 3);
    let clicks = stats.iter().find(|s| s.state == "sessions.clicks").unwrap();
    assert_eq!(clicks.on_access, 6);

    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || op.backend().publish_metrics());
    let found = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, _, _, value)| {
            let labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            key.key().name() == "statewright_ttl_expired_total"
                && labels.contains(&("state".into(), "sessions.clicks".into()))
                && labels.contains(&("cause".into(), "access".into()))
                && value == metrics_util::debugging::DebugValue::Counter(6)
        });
    assert!(
        found,
        "statewright_ttl_expired_total{{state=sessions.clicks,cause=access}} = 6"
    );
}

#[test]
fn durations_and_options_reach_the_descriptor() {
    use statewright::{StatefulOperator, TtlTime, TtlUpdate, TtlVisibility};
    let d = <read_return_event_descriptor::Probe as StatefulOperator>::DESCRIPTOR;
    let ttl = d.states[0].ttl.unwrap();
    assert_eq!(ttl.ttl, Duration::from_secs(90 * 60));
    assert_eq!(ttl.update, TtlUpdate::OnReadAndWrite);
    assert_eq!(ttl.visibility, TtlVisibility::ReturnExpiredIfNotCleanedUp);
    assert_eq!(ttl.time, TtlTime::Event);
    let plain = d.states[1].ttl.unwrap();
    assert_eq!(
        plain,
        statewright::TtlConfig::new(Duration::from_millis(1_500))
    );
}

mod read_return_event_descriptor {
    use super::*;

    #[derive(StatefulOperator, Default)]
    #[operator(name = "probe", key = u8)]
    pub struct Probe {
        #[state(
            ttl = "1h 30m",
            update = "on_read_and_write",
            visibility = "return_expired_if_not_cleaned_up",
            time = "event"
        )]
        pub a: ValueState<u8>,
        #[state(ttl = "1s 500ms")]
        pub b: ValueState<u8>,
    }
}

/// A native snapshot keeps stored values as they were written, so a TTL added or removed since
/// cannot be applied to it: the restore says so, changes nothing, and the canonical checkpoint
/// of the same state does the change.
#[cfg(feature = "rocksdb")]
#[test]
fn a_ttl_change_across_a_native_restore_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = |name: &str| {
        statewright::RocksDbBackend::open(
            dir.path().join(name),
            statewright::RocksDbOptions::low_memory(),
        )
        .unwrap()
    };
    let mut plain = WithoutTtl::default().bind(rocks("plain")).unwrap();
    fill_without_ttl(&mut plain, 0..20);
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path().join("c"))).unwrap();
    let info = checkpointer.checkpoint_now(&mut [&mut plain]).unwrap().info;
    assert_eq!(info.kind(), statewright::checkpoint::SnapshotKind::Native);
    let storage = checkpointer.storage().clone();

    let clock = ManualClock::new(100 * SEC);
    let mut op = with_ttl(rocks("with-ttl"), &clock);
    fill_with_ttl(&mut op, 100..101);
    let err = op.restore_from(&storage, RestorePoint::Latest).unwrap_err();
    assert!(
        matches!(&err, Error::Incompatible { reason, .. }
            if reason.contains("state `last` was written without a time-to-live")
                && reason.contains("native(false)")),
        "{err}"
    );
    // Refused before anything changed.
    assert_eq!(alive(&mut op, 100), (Some(100), 2, 1));
    assert_eq!(alive(&mut op, 5), (None, 0, 0));

    // The same state from a canonical checkpoint: stamped at restore time.
    let canonical = CheckpointStorage::open(dir.path().join("canonical")).unwrap();
    plain.checkpoint(&canonical).unwrap();
    op.restore_from(&canonical, RestorePoint::Latest).unwrap();
    assert_eq!(alive(&mut op, 5), (Some(5), 2, 1));
}
