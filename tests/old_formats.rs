//! Checkpoints written by earlier versions of statewright restore with this one: snapshot
//! format 1 (before schemas were recorded) under a version 2 manifest (before native
//! snapshots), a full checkpoint and an incremental one on top of it, at the same and at
//! another parallelism, TTL stamps included; and a new checkpoint in that directory keeps the
//! old ones readable. The fixture and the program that wrote it: `tests/fixtures/format1-manifest2`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use statewright::keygroup::{KeyGroupRange, key_group};
use statewright::prelude::*;
use statewright::{ManualClock, TtlBackend};

#[derive(StatefulOperator, Default)]
#[operator(name = "fixture", key = u64)]
struct Fixture {
    count: ValueState<u64>,
    #[state(ttl = "1day")]
    seen: ValueState<u64>,
    history: ListState<u32>,
    pages: MapState<String, u64>,
}

type Row = (Option<u64>, Option<u64>, Vec<u32>, BTreeMap<String, u64>);

/// What the fixture's program left in each key, after the full checkpoint only
/// (`incremental == false`) or after the incremental one too.
fn expected(incremental: bool) -> BTreeMap<u64, Row> {
    let mut out = BTreeMap::new();
    for k in 0..100u64 {
        let changed = incremental && k < 10;
        if incremental && k == 99 {
            continue;
        }
        let count = if changed { 1000 + k } else { k * 3 };
        let mut history = vec![k as u32, k as u32 + 1];
        let mut pages: BTreeMap<String, u64> =
            (0..k % 4).map(|p| (format!("p{p}"), k * 10 + p)).collect();
        if changed {
            history.push(7);
            pages.remove("p0");
        }
        out.insert(k, (Some(count), Some(k), history, pages));
    }
    out
}

/// A copy of the fixture directory (a restore reads it; a checkpoint would change it).
fn fixture() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1-manifest2");
    let dir = tempfile::tempdir().unwrap();
    for sub in ["", "chk-0000000001", "chk-0000000002"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(src.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && path.extension().is_none_or(|e| e != "md") {
                std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

fn restored(
    storage: &CheckpointStorage,
    point: RestorePoint,
    range: KeyGroupRange,
    clock: &ManualClock,
) -> Bound<Fixture, TtlBackend<HeapBackend>> {
    let mut op = Fixture::default()
        .bind(TtlBackend::with_clock(HeapBackend::new(), clock.clone()))
        .unwrap()
        .with_key_groups(range)
        .unwrap();
    op.restore_from(storage, point).unwrap();
    op
}

/// Every key of 0..100 that `op` owns, read back.
fn rows(op: &mut Bound<Fixture, TtlBackend<HeapBackend>>) -> BTreeMap<u64, Row> {
    let range = op.key_groups();
    let mut out = BTreeMap::new();
    for k in 0..100u64 {
        if !range.contains(key_group(&k.to_be_bytes(), 128)) {
            continue;
        }
        let mut st = op.key(&k).unwrap();
        let count = st.count().get_owned().unwrap();
        let seen = st.seen().get_owned().unwrap();
        let history = st.history().get_owned().unwrap();
        let pages: BTreeMap<String, u64> = st
            .pages()
            .entries()
            .unwrap()
            .map(|e| e.map(|(k, v)| (k, v.to_native())))
            .collect::<statewright::Result<_>>()
            .unwrap();
        if count.is_some() || seen.is_some() || !history.is_empty() || !pages.is_empty() {
            out.insert(k, (count, seen, history, pages));
        }
    }
    out
}

#[test]
fn a_format_1_checkpoint_chain_restores_at_any_parallelism() {
    let dir = fixture();
    let storage = CheckpointStorage::open_existing(dir.path()).unwrap();
    let list = storage.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[1].kind(),
        statewright::checkpoint::SnapshotKind::Incremental
    );
    let clock = ManualClock::new(2_500_000);
    for (point, incremental) in [
        (RestorePoint::Latest, true),
        (RestorePoint::Id(list[0].id), false),
    ] {
        let want = expected(incremental);
        let mut whole = restored(&storage, point, KeyGroupRange::all(128), &clock);
        assert_eq!(rows(&mut whole), want, "{point:?}");
        // Two instances read the key groups they own out of the one file.
        let mut merged = BTreeMap::new();
        for i in 0..2 {
            let range = KeyGroupRange::for_instance(128, 2, i).unwrap();
            let mut part = restored(&storage, point, range, &clock);
            let got = rows(&mut part);
            assert!(!got.is_empty());
            merged.extend(got);
        }
        assert_eq!(merged, want, "{point:?}, two instances");
    }
}

#[test]
fn ttl_stamps_of_a_format_1_snapshot_keep_their_time() {
    let dir = fixture();
    let storage = CheckpointStorage::open_existing(dir.path()).unwrap();
    const DAY: i64 = 86_400_000;
    // `seen` was written at 1,000 s and lives one day.
    let clock = ManualClock::new(1_000_000 + DAY - 1);
    let mut op = restored(
        &storage,
        RestorePoint::Latest,
        KeyGroupRange::all(128),
        &clock,
    );
    assert_eq!(op.key(&5).unwrap().seen().get_owned().unwrap(), Some(5));
    clock.set(1_000_000 + DAY);
    assert_eq!(op.key(&6).unwrap().seen().get_owned().unwrap(), None);
    // The states without a TTL are untouched by time.
    assert_eq!(op.key(&6).unwrap().count().get_owned().unwrap(), Some(1006));
}

#[test]
fn a_new_checkpoint_in_an_old_directory_keeps_the_old_ones_readable() {
    let dir = fixture();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let clock = ManualClock::new(2_500_000);
    let mut op = restored(
        &storage,
        RestorePoint::Latest,
        KeyGroupRange::all(128),
        &clock,
    );
    op.key(&50).unwrap().count().set(&5).unwrap();
    let info = op.checkpoint(&storage).unwrap();
    // The first commit numbers the manifest and retires the old one.
    assert!(!dir.path().join("MANIFEST").exists());
    assert_eq!(
        storage.manifest_location().unwrap(),
        Some(dir.path().join("manifests/00000000000000000001"))
    );
    let list = storage.list().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].id, info.id);
    let mut old = restored(
        &storage,
        RestorePoint::Id(list[0].id),
        KeyGroupRange::all(128),
        &clock,
    );
    assert_eq!(rows(&mut old), expected(false));
    let mut new = restored(
        &storage,
        RestorePoint::Latest,
        KeyGroupRange::all(128),
        &clock,
    );
    let mut want = expected(true);
    want.get_mut(&50).unwrap().0 = Some(5);
    assert_eq!(rows(&mut new), want);
}
