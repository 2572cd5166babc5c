//! Local checkpoint storage: commit by manifest, retention, restore by id, and damage that
//! never reaches the last good checkpoint.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use statewright::prelude::*;
use statewright::{Corruption, Error};

#[derive(StatefulOperator, Default)]
#[operator(name = "counts", key = u64)]
pub struct Counts {
    count: ValueState<u64>,
    seen: MapState<u32, bool>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "other", key = u64)]
pub struct Other {
    v: ValueState<u64>,
}

fn bump(
    op: &mut Bound<Counts, HeapBackend>,
    keys: std::ops::Range<u64>,
) -> statewright::Result<()> {
    for k in keys {
        let mut st = op.key(&k)?;
        st.count().update(|c| c.unwrap_or(0) + 1)?;
        st.seen().put(&(k as u32 % 7), &true)?;
    }
    Ok(())
}

fn count(op: &mut Bound<Counts, HeapBackend>, k: u64) -> statewright::Result<Option<u64>> {
    op.key(&k)?.count().get_owned()
}

#[test]
fn restore_latest_or_a_retained_checkpoint_by_id() -> statewright::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: "tmp".into(),
        source: e,
    })?;
    let storage = CheckpointStorage::open(dir.path())?.max_retained(2);
    let mut op = Counts::default().bind(HeapBackend::new())?;
    let mut ids = Vec::new();
    for round in 0..4 {
        bump(&mut op, 0..100)?;
        let info = op.checkpoint(&storage)?;
        assert_eq!(info.id, CheckpointId(round + 1));
        assert!(info.bytes() > 0);
        ids.push(info.id);
    }
    // Retention: the two newest remain, the others' directories are gone.
    let kept: Vec<_> = storage.list()?.iter().map(|c| c.id).collect();
    assert_eq!(kept, [CheckpointId(3), CheckpointId(4)]);
    let dirs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");

    let mut latest =
        Counts::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)?;
    assert_eq!(count(&mut latest, 42)?, Some(4));
    let mut third =
        Counts::default().restore(HeapBackend::new(), &storage, CheckpointId(3).into())?;
    assert_eq!(count(&mut third, 42)?, Some(3));
    let err = Counts::default()
        .restore(HeapBackend::new(), &storage, CheckpointId(1).into())
        .unwrap_err();
    assert!(matches!(err, Error::CheckpointNotFound { .. }), "{err}");
    Ok(())
}

#[test]
fn a_damaged_latest_checkpoint_leaves_the_previous_one_intact() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    bump(&mut op, 0..50)?;
    let first = op.checkpoint(&storage)?;
    let first_file = dir.path().join(&first.files[0].path);
    let first_bytes = fs::read(&first_file).unwrap();
    bump(&mut op, 0..50)?;
    let second = op.checkpoint(&storage)?;

    let damaged = dir.path().join(&second.files[0].path);
    let mut bytes = fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    fs::write(&damaged, &bytes).unwrap();

    let err = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap_err();
    match &err {
        Error::Corrupt {
            path,
            kind: Corruption::ChecksumMismatch { .. },
            ..
        } => {
            assert_eq!(path, &damaged);
        }
        other => panic!("unexpected: {other}"),
    }
    let mut back = Counts::default().restore(HeapBackend::new(), &storage, first.id.into())?;
    assert_eq!(count(&mut back, 10)?, Some(1));
    assert_eq!(fs::read(&first_file).unwrap(), first_bytes);

    // A truncated file is reported as such.
    fs::write(&damaged, &bytes[..mid]).unwrap();
    let err = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                kind: Corruption::Truncated { .. },
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_damaged_manifest_is_an_error_and_is_not_overwritten() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    bump(&mut op, 0..10)?;
    op.checkpoint(&storage)?;
    let manifest = storage.manifest_location()?.unwrap();
    let good = fs::read_to_string(&manifest).unwrap();

    let flipped = good.replacen("\"id\": 1", "\"id\": 7", 1);
    fs::write(&manifest, &flipped).unwrap();
    let err = storage.list().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                kind: Corruption::ChecksumMismatch {
                    section: "manifest",
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(op.checkpoint(&storage).is_err());
    assert_eq!(
        fs::read_to_string(&manifest).unwrap(),
        flipped,
        "a damaged manifest was replaced"
    );

    fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    assert!(matches!(storage.list(), Err(Error::Corrupt { .. })));
    fs::write(&manifest, "PK\x03\x04 not ours").unwrap();
    assert!(matches!(storage.list(), Err(Error::Foreign { .. })));

    fs::write(&manifest, &good).unwrap();
    assert_eq!(storage.list()?.len(), 1);
    Ok(())
}

#[test]
fn a_manifest_entry_whose_first_key_group_is_after_its_last_is_refused() -> statewright::Result<()>
{
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    bump(&mut op, 0..10)?;
    let info = op.checkpoint(&storage)?;
    let manifest = storage.manifest_location()?.unwrap();
    let good = fs::read_to_string(&manifest).unwrap();

    // The instance's range 0..=127 written as 100..=5, with a checksum that matches.
    let (body, _) = good.trim_end().rsplit_once('\n').unwrap();
    let reversed = body
        .replacen("\"first_key_group\": 0,", "\"first_key_group\": 100,", 1)
        .replacen("\"last_key_group\": 127,", "\"last_key_group\": 5,", 1);
    assert_ne!(reversed, body);
    let crc = crc32c::crc32c(reversed.as_bytes());
    let text = format!("{reversed}\ncrc32c {crc:08x}\n");
    fs::write(&manifest, &text).unwrap();

    for err in [
        storage.list().unwrap_err(),
        statewright::checkpoint::decode_manifest(&manifest, text.as_bytes()).unwrap_err(),
        Counts::default()
            .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
            .err()
            .unwrap(),
    ] {
        let Error::Corrupt {
            path,
            kind:
                Corruption::Malformed {
                    section: "manifest",
                    detail,
                },
            ..
        } = &err
        else {
            panic!("expected a malformed manifest, got {err:?}");
        };
        assert_eq!(path, &manifest);
        assert!(
            detail.contains(&format!("`{}`", info.files[0].path)) && detail.contains("100..=5"),
            "{detail}"
        );
    }

    fs::write(&manifest, &good).unwrap();
    assert_eq!(storage.list()?[0].files[0].key_groups().last(), 127);
    Ok(())
}

#[test]
fn open_existing_creates_nothing_and_refuses_what_is_not_a_directory() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let err = CheckpointStorage::open_existing(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::NotACheckpointDirectory { path, .. } if path == &missing),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is not a checkpoint directory: it does not exist",
            missing.display()
        )
    );
    assert!(!missing.exists());

    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    for path in [file.clone(), file.join("below")] {
        let err = CheckpointStorage::open_existing(&path).unwrap_err();
        assert!(
            matches!(&err, Error::NotACheckpointDirectory { path: p, .. } if p == &path),
            "{err:?}"
        );
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");

    // An existing directory opens, without a checkpoint, and stays empty.
    let storage = CheckpointStorage::open_existing(dir.path())?;
    assert!(storage.list()?.is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    Ok(())
}

#[test]
fn an_abandoned_checkpoint_is_invisible_and_cleaned_up() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    bump(&mut op, 0..10)?;
    op.checkpoint(&storage)?;
    {
        let mut pending = storage.begin()?;
        assert_eq!(pending.id(), CheckpointId(2));
        pending.add(&op)?;
        // Dropped without commit, as a failed checkpoint would be.
    }
    assert_eq!(storage.list()?.len(), 1);
    // A crash leaves a claimed number and a partial file behind; the number is never reused
    // and the files are removed.
    fs::create_dir(dir.path().join("chk-0000000005")).unwrap();
    fs::write(dir.path().join("chk-0000000005/CLAIM"), b"").unwrap();
    fs::write(
        dir.path().join("chk-0000000005/counts.kg0-127.snap"),
        b"SWSNAP",
    )
    .unwrap();
    let next = op.checkpoint(&storage)?;
    assert_eq!(next.id, CheckpointId(6));
    assert!(!dir.path().join("chk-0000000005").exists());
    Ok(())
}

#[test]
fn one_checkpoint_holds_several_operators() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut a = Counts::default().bind(HeapBackend::new())?;
    let mut b = Other::default().bind(HeapBackend::new())?;
    bump(&mut a, 0..5)?;
    b.key(&1)?.v().set(&99)?;
    let mut pending = storage.begin()?;
    pending.add(&a)?;
    pending.add(&b)?;
    assert!(pending.add(&b).is_err(), "the same operator twice");
    let info = pending.commit()?;
    assert_eq!(info.files.len(), 2);

    let mut b2 = Other::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)?;
    assert_eq!(b2.key(&1)?.v().get_owned()?, Some(99));
    let mut a2 = Counts::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)?;
    assert_eq!(count(&mut a2, 3)?, Some(1));
    Ok(())
}

#[test]
fn restoring_from_an_empty_directory_says_so() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let err = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap_err();
    assert!(matches!(err, Error::CheckpointNotFound { .. }), "{err}");
    Ok(())
}

#[test]
fn restore_the_state_as_of_a_point_in_time() -> statewright::Result<()> {
    use std::time::{Duration, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    let mut taken = Vec::new();
    for round in 0..3u64 {
        bump(&mut op, 0..10)?;
        taken.push(op.checkpoint(&storage)?);
        // Commit times are in milliseconds: keep them apart.
        std::thread::sleep(Duration::from_millis(15 * (round + 1)));
    }
    let at = |ms: u64| RestorePoint::AtOrBefore(UNIX_EPOCH + Duration::from_millis(ms));

    // Exactly at the second commit, and a moment after it: the second checkpoint.
    for ms in [taken[1].created_ms, taken[1].created_ms + 1] {
        let mut back = Counts::default().restore(HeapBackend::new(), &storage, at(ms))?;
        assert_eq!(count(&mut back, 3)?, Some(2), "as of {ms}");
    }
    // Now: the newest.
    let mut now = Counts::default().restore(
        HeapBackend::new(),
        &storage,
        RestorePoint::AtOrBefore(std::time::SystemTime::now()),
    )?;
    assert_eq!(count(&mut now, 3)?, Some(3));
    // Before the first commit: nothing to restore, and the error says what was asked.
    let err = Counts::default()
        .restore(HeapBackend::new(), &storage, at(taken[0].created_ms - 1))
        .unwrap_err();
    assert!(
        matches!(err, Error::CheckpointNotFound { ref wanted, .. } if wanted.contains("at or before")),
        "{err}"
    );
    Ok(())
}

#[test]
fn of_two_writers_from_one_commit_exactly_one_commits() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    bump(&mut op, 0..10)?;
    let base = op.checkpoint(&storage)?;
    // Two writers (threads, processes, or a savepoint during an asynchronous checkpoint)
    // begin from the same commit; each claims its own number, so neither writes over the
    // other's files.
    let mut first = storage.begin()?;
    first.add(&op)?;
    bump(&mut op, 0..5)?;
    let second = op.checkpoint(&storage)?;
    assert_ne!(first.id(), second.id);
    // The first to commit wins; the other is refused instead of replacing that commit, and
    // its files are removed.
    let first_id = first.id();
    let err = first.commit().unwrap_err();
    assert!(
        matches!(err, Error::CommitConflict { id, .. } if id == first_id.0),
        "{err}"
    );
    assert_eq!(
        storage.list()?.iter().map(|c| c.id).collect::<Vec<_>>(),
        [base.id, second.id]
    );
    assert!(!dir.path().join(format!("chk-{:010}", first_id.0)).exists());
    let mut restored =
        Counts::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)?;
    assert_eq!(count(&mut restored, 3)?, Some(2));
    // The next checkpoint builds on the winner.
    let next = op.checkpoint(&storage)?;
    assert_eq!(storage.list()?.last().map(|c| c.id), Some(next.id));
    Ok(())
}

#[test]
fn racing_writers_lose_no_commit_and_damage_none() -> statewright::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path())?.max_retained(16);
    let ops: Vec<_> = (0..6)
        .map(|i| {
            let mut op = Counts::default().bind(HeapBackend::new())?;
            bump(&mut op, 0..i + 1)?;
            Ok(op)
        })
        .collect::<statewright::Result<_>>()?;
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = ops
            .iter()
            .map(|op| {
                let storage = &storage;
                scope.spawn(move || op.checkpoint(storage))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut committed = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(info) => committed.push(info.id),
            Err(Error::CommitConflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    assert!(!committed.is_empty());
    // Every writer that was told it committed is in the list, and every listed checkpoint
    // restores whole.
    let listed: Vec<_> = storage.list()?.iter().map(|c| c.id).collect();
    for id in &committed {
        assert!(
            listed.contains(id),
            "{id} committed but not listed: {listed:?}"
        );
    }
    for id in listed {
        Counts::default().restore(HeapBackend::new(), &storage, RestorePoint::Id(id))?;
    }
    Ok(())
}

/// A store other than a directory: the checkpointer and a restore both take it as a trait
/// object, and nothing is written outside it.
#[test]
fn the_checkpointer_writes_to_any_store() -> statewright::Result<()> {
    use statewright::checkpointer::{CheckpointConfig, Checkpointer};
    use statewright::store::{CheckpointStore, LocalStore};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    fs::create_dir(&root).unwrap();
    let store: std::sync::Arc<dyn CheckpointStore> = std::sync::Arc::new(LocalStore::open(&root)?);
    let mut checkpointer = Checkpointer::new(CheckpointConfig::on_store(store.clone()))?;
    let mut op = Counts::default().bind(HeapBackend::new())?;
    bump(&mut op, 0..10)?;
    checkpointer.checkpoint_now(&mut [&mut op])?;
    bump(&mut op, 0..5)?;
    checkpointer.checkpoint_now(&mut [&mut op])?;
    assert!(store.list("manifests/")?.len() == 1);
    let storage = CheckpointStorage::from_store(store);
    assert_eq!(storage.list()?.len(), 2);
    let mut restored =
        Counts::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)?;
    assert_eq!(count(&mut restored, 3)?, Some(2));
    assert_eq!(count(&mut restored, 7)?, Some(1));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "wrote outside the store"
    );
    Ok(())
}

/// A checkpoint written by several writers (one per instance, as the workers of a distributed
/// job) and committed by one: nothing is listed before the commit, an incomplete or foreign
/// part is refused without touching the last checkpoint, and the committed parts restore.
#[test]
fn parts_written_by_many_writers_commit_together() -> statewright::Result<()> {
    use statewright::keygroup::KeyGroupRange;
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: "tmp".into(),
        source: e,
    })?;
    let storage = CheckpointStorage::open(dir.path())?;
    assert_eq!(storage.latest()?, None);
    let maxp = Counts::DESCRIPTOR.max_parallelism;
    let mut instances = Vec::new();
    for i in 0..2 {
        let range = KeyGroupRange::for_instance(maxp, 2, i).unwrap();
        let mut op = Counts::default()
            .bind(HeapBackend::new())?
            .with_key_groups(range)?;
        for k in 0..200u64 {
            let kg = statewright::keygroup::key_group(&k.to_key_bytes(), maxp);
            if range.contains(kg) {
                op.key(&k)?.count().set(&(k * 10))?;
            }
        }
        instances.push(op);
    }
    let id = CheckpointId(1);
    let part0 = storage.write_part(id, "w0", instances[0].capture()?, &[])?;
    let part1 = storage.write_part(id, "w1", instances[1].capture()?, &[])?;
    assert!(storage.list()?.is_empty(), "a part is not a checkpoint");
    // The same instance twice is refused, and nothing is committed.
    let again = storage.write_part(id, "w0-retry", instances[0].capture()?, &[])?;
    assert!(matches!(
        storage.commit_parts(id, vec![part0.clone(), again]),
        Err(Error::InvalidName { .. })
    ));
    assert!(storage.list()?.is_empty());
    // A part whose file was lost is refused.
    let mut lost = part1.clone();
    lost.bytes += 1;
    assert!(storage.commit_parts(id, vec![part0.clone(), lost]).is_err());
    let info = storage.commit_parts(id, vec![part0, part1])?;
    assert_eq!(storage.latest()?.map(|c| c.id), Some(info.id));
    // An older or equal number cannot be committed after it.
    assert!(matches!(
        storage.commit_parts(id, Vec::new()),
        Err(Error::CommitConflict { .. })
    ));
    // One instance restores everything from both parts.
    let mut all = Counts::default().bind(HeapBackend::new())?;
    all.restore_from(&storage, RestorePoint::Latest)?;
    for k in 0..200u64 {
        assert_eq!(count(&mut all, k)?, Some(k * 10));
    }
    Ok(())
}
