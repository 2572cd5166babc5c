//! Incremental and asynchronous checkpoints: every checkpoint of a chain restores to exactly
//! the state it was taken of, an incremental checkpoint writes only what changed, retention
//! keeps what a chain needs, and updates made while a checkpoint is written are in the next
//! one.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use statewright::checkpoint::SnapshotKind;
use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::prelude::*;
use statewright::snapshot::SnapshotOptions;
use statewright::{ManualClock, TtlBackend};

#[derive(StatefulOperator, Default)]
#[operator(name = "mixed", key = u64)]
pub struct Mixed {
    total: ValueState<u64>,
    recent: ListState<u32>,
    seen: MapState<u32, u64>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "expiring", key = u64)]
pub struct Expiring {
    #[state(ttl = "1h")]
    total: ValueState<u64>,
    #[state(ttl = "1h")]
    recent: ListState<u32>,
    #[state(ttl = "1h")]
    seen: MapState<u32, u64>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The canonical bytes of a full snapshot: equal exactly when the states are equal.
fn image<Op: StatefulOperator, B: statewright::Snapshots>(op: &Bound<Op, B>) -> Vec<u8> {
    // Full snapshots are canonical: the same state gives the same bytes on every backend.
    let mut out = Vec::new();
    op.write_snapshot(
        SnapshotOptions {
            compression: false,
            block_size: 1 << 16,
        },
        Path::new("image"),
        &mut out,
    )
    .unwrap();
    out
}

/// One random change of every kind an operator can make, deletions and clears included.
fn mutate_mixed<B: statewright::Snapshots>(op: &mut Bound<Mixed, B>, rng: &mut Rng, keys: u64) {
    let k = rng.below(keys);
    let mut st = op.key(&k).unwrap();
    match rng.below(9) {
        0..=2 => st.total().update(|t| t.unwrap_or(0) + 1).unwrap(),
        3 => st.total().clear().unwrap(),
        4 => st.recent().add(&(k as u32)).unwrap(),
        5 => st.recent().clear().unwrap(),
        6 => st.seen().put(&(rng.below(5) as u32), &k).unwrap(),
        7 => {
            st.seen().remove(&(rng.below(5) as u32)).unwrap();
        }
        _ => st.seen().clear().unwrap(),
    }
}

fn mutate_expiring(
    op: &mut Bound<Expiring, impl statewright::Snapshots>,
    rng: &mut Rng,
    keys: u64,
) {
    let k = rng.below(keys);
    let mut st = op.key(&k).unwrap();
    match rng.below(7) {
        0..=1 => st.total().update(|t| t.unwrap_or(0) + 1).unwrap(),
        2 => st.total().clear().unwrap(),
        3 => st.recent().add(&(k as u32)).unwrap(),
        4 => st.seen().put(&(rng.below(5) as u32), &k).unwrap(),
        5 => {
            st.seen().remove(&(rng.below(5) as u32)).unwrap();
        }
        _ => st.seen().clear().unwrap(),
    }
}

#[test]
fn every_checkpoint_of_a_chain_restores_the_state_it_was_taken_of() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path())
        .max_retained(30)
        .max_chain(4)
        .max_chain_ratio(10.0);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut expected = Vec::new();
    for _ in 0..12 {
        for _ in 0..400 {
            mutate_mixed(&mut op, &mut rng, 150);
        }
        let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
        expected.push((report.info.id, report.info.kind(), image(&op)));
    }
    // A full one, then chains of 4 incremental ones.
    let kinds: Vec<SnapshotKind> = expected.iter().map(|e| e.1).collect();
    use SnapshotKind::{Full as F, Incremental as I};
    assert_eq!(kinds, [F, I, I, I, I, F, I, I, I, I, F, I]);
    for (id, _, want) in &expected {
        let restored = Mixed::default()
            .restore(
                HeapBackend::new(),
                checkpointer.storage(),
                RestorePoint::Id(*id),
            )
            .unwrap();
        assert!(image(&restored) == *want, "checkpoint {id}");
    }
    // Incremental checkpoints go on from a restored state with a new full one.
    let mut restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    mutate_mixed(&mut restored, &mut rng, 150);
    let mut fresh = Checkpointer::new(CheckpointConfig::new(dir.path()).max_retained(30)).unwrap();
    let report = fresh.checkpoint_now(&mut [&mut restored]).unwrap();
    assert_eq!(report.info.kind(), SnapshotKind::Full);
    mutate_mixed(&mut restored, &mut rng, 150);
    let report = fresh.checkpoint_now(&mut [&mut restored]).unwrap();
    assert_eq!(report.info.kind(), SnapshotKind::Incremental);
    let back = Mixed::default()
        .restore(HeapBackend::new(), fresh.storage(), RestorePoint::Latest)
        .unwrap();
    assert!(image(&back) == image(&restored));
}

#[test]
fn stamped_values_travel_through_incremental_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = CheckpointConfig::new(dir.path())
        .max_retained(10)
        .max_chain_ratio(100.0);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let backend = TtlBackend::with_clock(HeapBackend::new(), clock.clone());
    let mut op = Expiring::default().bind(backend).unwrap();
    let mut rng = Rng(7);
    let mut expected = Vec::new();
    for round in 0..5 {
        clock.advance(Duration::from_secs(60));
        for _ in 0..300 {
            mutate_expiring(&mut op, &mut rng, 100);
        }
        let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
        assert_eq!(
            report.info.kind(),
            if round == 0 {
                SnapshotKind::Full
            } else {
                SnapshotKind::Incremental
            }
        );
        expected.push((report.info.id, image(&op)));
    }
    for (id, want) in &expected {
        let backend = TtlBackend::with_clock(HeapBackend::new(), clock.clone());
        let restored = Expiring::default()
            .restore(backend, checkpointer.storage(), RestorePoint::Id(*id))
            .unwrap();
        assert!(image(&restored) == *want, "checkpoint {id}");
    }
}

#[test]
fn an_incremental_checkpoint_after_one_percent_changed_writes_under_three_percent() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    let keys = 100_000u64;
    for k in 0..keys {
        op.key(&k).unwrap().total().set(&(k * 3)).unwrap();
    }
    let full = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(full.info.kind(), SnapshotKind::Full);
    let mut rng = Rng(42);
    for _ in 0..keys / 100 {
        let k = rng.below(keys);
        op.key(&k)
            .unwrap()
            .total()
            .update(|t| t.unwrap_or(0) + 1)
            .unwrap();
    }
    let inc = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(inc.info.kind(), SnapshotKind::Incremental);
    let ratio = inc.info.bytes() as f64 / full.info.bytes() as f64;
    assert!(
        ratio <= 0.03,
        "incremental {} bytes, full {} bytes: {ratio:.4}",
        inc.info.bytes(),
        full.info.bytes()
    );
    assert!(inc.info.files[0].entries <= keys / 100);
}

#[test]
fn a_chain_grown_past_its_size_ratio_gets_a_new_full_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Uncompressed, so sizes follow entry counts.
    let config = CheckpointConfig::new(dir.path())
        .compression(false)
        .max_chain(100)
        .max_chain_ratio(0.5);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    for k in 0..1_000u64 {
        op.key(&k).unwrap().total().set(&k).unwrap();
    }
    let (mut full, mut since_full) = (0u64, 0u64);
    let mut kinds = Vec::new();
    for round in 0..8u64 {
        // A fifth of the keys changes each round.
        for k in 0..200u64 {
            op.key(&(k + round * 7))
                .unwrap()
                .total()
                .set(&round)
                .unwrap();
        }
        let info = checkpointer.checkpoint_now(&mut [&mut op]).unwrap().info;
        // The rule: a full checkpoint once the increments since the last full one exceed half
        // of its size.
        let want = if round == 0 || since_full as f64 > 0.5 * full as f64 {
            SnapshotKind::Full
        } else {
            SnapshotKind::Incremental
        };
        assert_eq!(info.kind(), want, "round {round}");
        match want {
            SnapshotKind::Full => (full, since_full) = (info.bytes(), 0),
            SnapshotKind::Incremental => since_full += info.bytes(),
            SnapshotKind::Native => panic!("the heap backend has no native checkpoints"),
        }
        kinds.push(want);
    }
    // Each increment is a fifth of the entries, so chains are short but not single.
    assert!(kinds.iter().filter(|k| **k == SnapshotKind::Full).count() >= 3);
    assert!(
        kinds
            .windows(2)
            .any(|w| w == [SnapshotKind::Incremental; 2])
    );
}

#[test]
fn retention_keeps_every_file_a_retained_chain_needs() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path())
        .max_retained(2)
        .max_chain(3)
        .max_chain_ratio(100.0);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    let mut rng = Rng(99);
    let mut first_full_dir = None;
    for round in 0..9 {
        for _ in 0..200 {
            mutate_mixed(&mut op, &mut rng, 80);
        }
        let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
        let file = &report.info.files[0];
        if round == 0 {
            first_full_dir = Some(dir.path().join(file.path.split_once('/').unwrap().0));
        }
        // Only 2 checkpoints are listed, yet every one of them restores: their bases stay.
        let listed = checkpointer.storage().list().unwrap();
        assert!(listed.len() <= 2);
        for c in &listed {
            Mixed::default()
                .restore(
                    HeapBackend::new(),
                    checkpointer.storage(),
                    RestorePoint::Id(c.id),
                )
                .unwrap();
        }
        let first = first_full_dir.as_ref().unwrap();
        // Checkpoint 1 is the base of 2, 3, 4; once 5 (full) and 6 are the retained ones it goes.
        assert_eq!(first.exists(), round < 5, "round {round}");
    }
    // Nothing but the retained checkpoints and their bases is left on disk.
    let mut dirs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    dirs.sort();
    let listed = checkpointer.storage().list().unwrap();
    let mut needed: Vec<String> = listed
        .iter()
        .flat_map(|c| c.files.iter().flat_map(|f| f.chain()))
        .map(|r| r.path.split_once('/').unwrap().0.to_owned())
        .collect();
    needed.sort();
    needed.dedup();
    assert_eq!(dirs, needed);
}

#[test]
fn a_failed_checkpoint_keeps_the_last_good_one_and_the_next_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    let mut rng = Rng(5);
    for _ in 0..300 {
        mutate_mixed(&mut op, &mut rng, 50);
    }
    checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    let good = image(&op);
    for _ in 0..300 {
        mutate_mixed(&mut op, &mut rng, 50);
    }
    // A damaged manifest makes the write fail after the changes were taken.
    let manifest = checkpointer.storage().manifest_location().unwrap().unwrap();
    let saved = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, b"{ not a manifest").unwrap();
    assert!(checkpointer.checkpoint_now(&mut [&mut op]).is_err());
    std::fs::write(&manifest, &saved).unwrap();
    let restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert!(image(&restored) == good);
    // The changes taken by the failed attempt are in no checkpoint, so the next is full and
    // holds them.
    let report = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(report.info.kind(), SnapshotKind::Full);
    let restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert!(image(&restored) == image(&op));
}

#[test]
fn an_instance_left_out_of_a_checkpoint_starts_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path()).max_retained(1);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let mut a = Expiring::default()
        .bind(TtlBackend::new(HeapBackend::new()))
        .unwrap();
    let mut b = Mixed::default().bind(HeapBackend::new()).unwrap();
    let mut rng = Rng(3);
    for _ in 0..200 {
        mutate_mixed(&mut b, &mut rng, 50);
    }
    checkpointer.checkpoint_now(&mut [&mut a, &mut b]).unwrap();
    // Only `a`: with one checkpoint retained, `b`'s full snapshot is deleted.
    checkpointer.checkpoint_now(&mut [&mut a]).unwrap();
    for _ in 0..200 {
        mutate_mixed(&mut b, &mut rng, 50);
    }
    let report = checkpointer.checkpoint_now(&mut [&mut a, &mut b]).unwrap();
    let file_b = report
        .info
        .files
        .iter()
        .find(|f| f.operator == "mixed")
        .unwrap();
    assert_eq!(file_b.kind, SnapshotKind::Full);
    let restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert!(image(&restored) == image(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_during_the_asynchronous_phase_are_in_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    for k in 0..50_000u64 {
        op.key(&k).unwrap().total().set(&1).unwrap();
    }
    let started = checkpointer.trigger(&mut [&mut op]).unwrap();
    assert_eq!(started.entries, 50_000);
    let at_capture = image(&op);
    // Processing goes on while the checkpoint is written.
    for k in 0..50_000u64 {
        op.key(&k).unwrap().total().set(&2).unwrap();
    }
    op.key(&99_999).unwrap().recent().add(&7).unwrap();
    let first = checkpointer.wait().await.unwrap().unwrap();
    let restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Id(first.info.id),
        )
        .unwrap();
    assert!(
        image(&restored) == at_capture,
        "no update of the asynchronous phase"
    );

    checkpointer.trigger(&mut [&mut op]).unwrap();
    let second = checkpointer.wait().await.unwrap().unwrap();
    assert_eq!(second.info.kind(), SnapshotKind::Incremental);
    let mut restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert!(image(&restored) == image(&op), "every update, none lost");
    assert_eq!(
        restored.key(&123).unwrap().total().get_owned().unwrap(),
        Some(2)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_checkpointer_checkpoints_every_interval_while_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path()).interval(Duration::from_millis(20));
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    let mut completed = Vec::new();
    let mut i = 0u64;
    while completed.len() < 3 {
        op.key(&(i % 1000)).unwrap().total().set(&i).unwrap();
        i += 1;
        checkpointer.poll(&mut [&mut op]).unwrap();
        if let Some(done) = checkpointer.take_finished() {
            completed.push(done.unwrap());
        }
        if i.is_multiple_of(1000) {
            // Let the blocking pool and the timer run.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(completed[0].info.kind(), SnapshotKind::Full);
    assert_eq!(completed[1].info.kind(), SnapshotKind::Incremental);
    assert!(completed.windows(2).all(|w| w[0].info.id < w[1].info.id));
    assert!(completed.iter().all(|c| c.started.sync_pause <= c.duration));
}

#[test]
fn asynchronous_checkpoints_need_a_runtime_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Mixed::default().bind(HeapBackend::new()).unwrap();
    let err = checkpointer.trigger(&mut [&mut op]).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    // Without a runtime, checkpoint_now still works.
    checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
}

/// RocksDB's synchronous step is a checkpoint of hard links; the entries are copied out of it
/// on the blocking pool. Updates after the capture, including to the column families it
/// reads, are in the next checkpoint only.
#[cfg(feature = "rocksdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_checkpoints_copy_the_state_after_the_pause() {
    use statewright::{RocksDbBackend, RocksDbOptions};
    let dir = tempfile::tempdir().unwrap();
    // Canonical snapshots, written from a detached view (native ones: the next test).
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::new(dir.path()).native(false)).unwrap();
    let backend =
        RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap();
    let mut op = Mixed::default().bind(backend).unwrap();
    let mut rng = Rng(11);
    for _ in 0..5_000 {
        mutate_mixed(&mut op, &mut rng, 2_000);
    }
    let at_capture = image(&op);
    let started = checkpointer.trigger(&mut [&mut op]).unwrap();
    // The entries are read after the pause, from the detached view.
    assert_eq!(started.entries, 0);
    for _ in 0..5_000 {
        mutate_mixed(&mut op, &mut rng, 2_000);
    }
    let first = checkpointer.wait().await.unwrap().unwrap();
    assert_eq!(first.info.kind(), SnapshotKind::Full);
    let restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Id(first.info.id),
        )
        .unwrap();
    assert!(
        image(&restored) == at_capture,
        "the state at the pause, nothing after"
    );
    checkpointer.trigger(&mut [&mut op]).unwrap();
    checkpointer.wait().await.unwrap().unwrap();
    let restored = Mixed::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert!(image(&restored) == image(&op), "every update, none lost");
    // The detached views are gone with their checkpoints written.
    let leftovers = capture_dirs(dir.path());
    assert_eq!(leftovers, 0);
}

/// RocksDB's native checkpoints: the pause hard-links the files, the asynchronous step moves
/// them into the storage; updates made meanwhile are in the next checkpoint only.
#[cfg(feature = "rocksdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_native_checkpoints_hold_the_state_of_the_pause() {
    use statewright::keygroup::KeyGroupRange;
    use statewright::{RocksDbBackend, RocksDbOptions, restore_native};
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::new(dir.path().join("checkpoints"))).unwrap();
    let backend =
        RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap();
    let mut op = Mixed::default().bind(backend).unwrap();
    let mut rng = Rng(12);
    let mut restored_images = Vec::new();
    for round in 0..3 {
        for _ in 0..5_000 {
            mutate_mixed(&mut op, &mut rng, 2_000);
        }
        let at_capture = image(&op);
        let started = checkpointer.trigger(&mut [&mut op]).unwrap();
        assert_eq!((started.native, started.entries), (1, 0));
        for _ in 0..2_000 {
            mutate_mixed(&mut op, &mut rng, 2_000);
        }
        let report = checkpointer.wait().await.unwrap().unwrap();
        assert_eq!(report.info.kind(), SnapshotKind::Native);
        let restored = restore_native(
            Mixed::default(),
            checkpointer.storage(),
            RestorePoint::Id(report.info.id),
            KeyGroupRange::all(Mixed::DESCRIPTOR.max_parallelism),
            dir.path().join(format!("restored-{round}")),
            RocksDbOptions::low_memory(),
        )
        .unwrap();
        restored_images.push(image(&restored) == at_capture);
    }
    assert_eq!(restored_images, vec![true; 3], "the state at each pause");
    let leftovers = capture_dirs(dir.path());
    assert_eq!(leftovers, 0);
}

/// The RocksDB capture directories (detached views, native checkpoint files) left in `dir`.
#[cfg(feature = "rocksdb")]
fn capture_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".statewright-capture-")
        })
        .count()
}
