//! Native RocksDB checkpoints in the shared checkpoint storage: a checkpoint after a small
//! change writes little, retention never deletes a shared file a kept checkpoint lists (and
//! deletes the others), every kept checkpoint restores, rescaling works, and damaged files are
//! typed errors.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use statewright::checkpoint::SnapshotKind;
use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::snapshot::SnapshotOptions;
use statewright::{Error, RocksDbBackend, RocksDbOptions, restore_native};

#[derive(StatefulOperator, Default)]
#[operator(name = "native", key = u64, max_parallelism = 64)]
struct Native {
    value: ValueState<u64>,
    seen: ListState<u32>,
    tags: MapState<u32, u64>,
}

const KEYS: u64 = 20_000;
const MAX: u16 = 64;

fn open(path: &Path) -> Bound<Native, RocksDbBackend> {
    Native::default()
        .bind(RocksDbBackend::open(path, RocksDbOptions::low_memory()).unwrap())
        .unwrap()
}

fn apply(op: &mut Bound<Native, RocksDbBackend>, k: u64, round: u64) {
    let mut st = op.key(&k).unwrap();
    st.value().set(&(k * 1000 + round)).unwrap();
    st.seen().add(&(round as u32)).unwrap();
    st.tags().put(&((k % 7) as u32), &round).unwrap();
}

/// The canonical bytes of an instance's state (identical for identical states).
fn image<B: AnyBackend>(op: &Bound<Native, B>) -> Vec<u8> {
    let mut out = Vec::new();
    op.write_snapshot(
        SnapshotOptions {
            compression: false,
            block_size: 4096,
        },
        Path::new("image"),
        &mut out,
    )
    .unwrap();
    out
}

/// The state a heap instance owning `range` holds after `rounds` rounds of `apply` (round r
/// touches the keys `k % 10 == r`, round 0 all keys).
fn expected(range: KeyGroupRange, rounds: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut all = Native::default().bind(HeapBackend::new()).unwrap();
    for round in 0..rounds {
        for k in 0..KEYS {
            if round == 0 || k % 10 == round {
                let mut st = all.key(&k).unwrap();
                st.value().set(&(k * 1000 + round)).unwrap();
                st.seen().add(&(round as u32)).unwrap();
                st.tags().put(&((k % 7) as u32), &round).unwrap();
            }
        }
    }
    all.checkpoint(&storage).unwrap();
    let mut part = Native::default()
        .bind(HeapBackend::new())
        .unwrap()
        .with_key_groups(range)
        .unwrap();
    part.restore_from(&storage, RestorePoint::Latest).unwrap();
    image(&part)
}

fn round(op: &mut Bound<Native, RocksDbBackend>, round: u64) {
    for k in 0..KEYS {
        if round == 0 || k % 10 == round {
            apply(op, k, round);
        }
    }
}

fn shared_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("shared"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn listed_shared(storage: &CheckpointStorage) -> BTreeSet<String> {
    storage
        .list()
        .unwrap()
        .iter()
        .flat_map(|c| c.files.clone())
        .filter_map(|f| f.native)
        .flat_map(|n| n.files)
        .filter_map(|f| f.shared)
        .collect()
}

#[test]
fn native_checkpoints_share_files_retain_what_they_list_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("checkpoints");
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::new(&store).max_retained(2)).unwrap();
    let mut op = open(&dir.path().join("db"));
    round(&mut op, 0);
    let first = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert_eq!(first.info.kind(), SnapshotKind::Native);
    assert_eq!(first.started.native, 1);
    assert!(first.info.bytes() > 0);

    // Round 1 changes a tenth of the keys: only the new SST files are written.
    round(&mut op, 1);
    let second = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    assert!(
        second.info.bytes() * 2 < first.info.bytes(),
        "the second native checkpoint wrote {} bytes, the first {}",
        second.info.bytes(),
        first.info.bytes()
    );
    assert!(second.info.restore_bytes() > second.info.bytes());

    for r in 2..4 {
        round(&mut op, r);
        checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
        // Nothing under shared/ but what the retained checkpoints list.
        assert_eq!(shared_files(&store), listed_shared(checkpointer.storage()));
    }
    let storage = checkpointer.storage().clone();
    let ids: Vec<u64> = storage.list().unwrap().iter().map(|c| c.id.0).collect();
    assert_eq!(ids, vec![3, 4]);
    for (id, rounds) in [(3, 3), (4, 4)] {
        let restored = restore_native(
            Native::default(),
            &storage,
            RestorePoint::Id(CheckpointId(id)),
            KeyGroupRange::all(MAX),
            dir.path().join(format!("restored-{id}")),
            RocksDbOptions::low_memory(),
        )
        .unwrap();
        assert!(
            image(&restored) == expected(KeyGroupRange::all(MAX), rounds),
            "checkpoint {id}"
        );
    }
    assert!(matches!(
        restore_native(
            Native::default(),
            &storage,
            RestorePoint::Id(CheckpointId(1)),
            KeyGroupRange::all(MAX),
            dir.path().join("gone"),
            RocksDbOptions::low_memory(),
        ),
        Err(Error::CheckpointNotFound { .. })
    ));
    assert!(!dir.path().join("gone").exists());
}

#[test]
fn a_restored_database_shares_the_files_it_was_restored_with_and_never_clashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("checkpoints");
    let config = CheckpointConfig::new(&store).max_retained(10);
    let mut checkpointer = Checkpointer::new(config.clone()).unwrap();
    let mut op = open(&dir.path().join("db"));
    round(&mut op, 0);
    let base = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();

    // Two databases restored from the same checkpoint go on differently and checkpoint into
    // the same storage: the files they write after the restore carry the same RocksDB numbers.
    let mut a = restore_native(
        Native::default(),
        checkpointer.storage(),
        RestorePoint::Latest,
        KeyGroupRange::all(MAX),
        dir.path().join("a"),
        RocksDbOptions::low_memory(),
    )
    .unwrap();
    let mut b = restore_native(
        Native::default(),
        checkpointer.storage(),
        RestorePoint::Latest,
        KeyGroupRange::all(MAX),
        dir.path().join("b"),
        RocksDbOptions::low_memory(),
    )
    .unwrap();
    round(&mut a, 1);
    let after_a = checkpointer.checkpoint_now(&mut [&mut a]).unwrap();
    // The restored files are shared, not written again.
    assert!(
        after_a.info.bytes() * 2 < base.info.bytes(),
        "{} bytes after a restore, {} in the base",
        after_a.info.bytes(),
        base.info.bytes()
    );
    round(&mut b, 2);
    let after_b = checkpointer.checkpoint_now(&mut [&mut b]).unwrap();
    drop((a, b));

    for (id, want) in [(after_a.info.id, [0, 1]), (after_b.info.id, [0, 2])] {
        let restored = restore_native(
            Native::default(),
            checkpointer.storage(),
            RestorePoint::Id(id),
            KeyGroupRange::all(MAX),
            dir.path().join(format!("check-{id}")),
            RocksDbOptions::low_memory(),
        )
        .unwrap();
        let mut heap = Native::default().bind(HeapBackend::new()).unwrap();
        for r in want {
            for k in 0..KEYS {
                if r == 0 || k % 10 == r {
                    let mut st = heap.key(&k).unwrap();
                    st.value().set(&(k * 1000 + r)).unwrap();
                    st.seen().add(&(r as u32)).unwrap();
                    st.tags().put(&((k % 7) as u32), &r).unwrap();
                }
            }
        }
        assert!(image(&restored) == image(&heap), "checkpoint {id}");
    }
}

#[test]
fn native_checkpoints_of_two_instances_restore_into_three_and_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("checkpoints");
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(&store)).unwrap();
    let mut ops: Vec<_> = (0..2u16)
        .map(|i| {
            open(&dir.path().join(format!("db-{i}")))
                .with_key_groups(KeyGroupRange::for_instance(MAX, 2, i).unwrap())
                .unwrap()
        })
        .collect();
    for r in 0..3 {
        for k in 0..KEYS {
            if r == 0 || k % 10 == r {
                let kg = statewright::keygroup::key_group(&k.to_key_bytes(), MAX);
                let owner = KeyGroupRange::instance_of(kg, MAX, 2) as usize;
                apply(&mut ops[owner], k, r);
            }
        }
        let (left, right) = ops.split_at_mut(1);
        checkpointer
            .checkpoint_now(&mut [&mut left[0], &mut right[0]])
            .unwrap();
    }
    for parallelism in [3u16, 1] {
        for i in 0..parallelism {
            let range = KeyGroupRange::for_instance(MAX, parallelism, i).unwrap();
            let restored = restore_native(
                Native::default(),
                checkpointer.storage(),
                RestorePoint::Latest,
                range,
                dir.path().join(format!("p{parallelism}-{i}")),
                RocksDbOptions::low_memory(),
            )
            .unwrap();
            assert!(
                image(&restored) == expected(range, 3),
                "instance {i} of {parallelism}"
            );
        }
    }
}

#[test]
fn native_restores_are_refused_or_fail_cleanly_when_they_cannot_be_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("checkpoints");
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(&store)).unwrap();
    let mut op = open(&dir.path().join("db"));
    round(&mut op, 0);
    let info = checkpointer.checkpoint_now(&mut [&mut op]).unwrap().info;
    let storage = checkpointer.storage().clone();

    // Another backend cannot open RocksDB's files; the error names the way to a checkpoint
    // it can restore.
    let mut heap = Native::default().bind(HeapBackend::new()).unwrap();
    let err = heap
        .restore_from(&storage, RestorePoint::Latest)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Incompatible { reason, .. }
            if reason.contains("native rocksdb snapshot") && reason.contains("native(false)")),
        "{err}"
    );

    // Another maximum parallelism.
    #[derive(StatefulOperator, Default)]
    #[operator(name = "native", key = u64, max_parallelism = 32)]
    struct Fewer {
        value: ValueState<u64>,
    }
    let err = restore_native(
        Fewer::default(),
        &storage,
        RestorePoint::Latest,
        KeyGroupRange::all(32),
        dir.path().join("fewer"),
        RocksDbOptions::low_memory(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Incompatible { reason, .. } if reason.contains("max_parallelism 64")),
        "{err}"
    );

    // A target that exists is never overwritten.
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep"), b"mine").unwrap();
    assert!(
        restore_native(
            Native::default(),
            &storage,
            RestorePoint::Latest,
            KeyGroupRange::all(MAX),
            &existing,
            RocksDbOptions::low_memory(),
        )
        .is_err()
    );
    assert_eq!(std::fs::read(existing.join("keep")).unwrap(), b"mine");

    // A flipped byte is found by verification; a cut file stops the restore with a typed
    // error and leaves nothing behind.
    let file = &info.files[0];
    let native = file.native.as_ref().unwrap();
    let sst = native.files.iter().find(|f| f.shared.is_some()).unwrap();
    let sst_path = storage.native_file_path(file, sst).unwrap();
    let original = std::fs::read(&sst_path).unwrap();
    // The stored file shares its inode with the live database's (hard links); damage comes
    // as a new file in its place, so the database keeps its own.
    let replace = |bytes: &[u8]| {
        let tmp = sst_path.with_extension("damaged");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &sst_path).unwrap();
    };
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    replace(&flipped);
    assert!(matches!(
        storage.verify_native(file, &mut |_| {}),
        Err(Error::Corrupt { .. })
    ));
    replace(&original[..original.len() - 1]);
    let target = dir.path().join("cut");
    assert!(matches!(
        restore_native(
            Native::default(),
            &storage,
            RestorePoint::Latest,
            KeyGroupRange::all(MAX),
            &target,
            RocksDbOptions::low_memory(),
        ),
        Err(Error::Corrupt { .. })
    ));
    assert!(!target.exists());

    // The next checkpoint replaces the damaged shared file rather than listing it again, which
    // mends the older checkpoint too.
    let next = checkpointer.checkpoint_now(&mut [&mut op]).unwrap().info;
    for c in storage.list().unwrap() {
        for f in &c.files {
            storage.verify_native(f, &mut |_| {}).unwrap();
        }
    }
    restore_native(
        Native::default(),
        &storage,
        RestorePoint::Id(next.id),
        KeyGroupRange::all(MAX),
        dir.path().join("mended"),
        RocksDbOptions::low_memory(),
    )
    .unwrap();
}

#[test]
fn canonical_and_native_snapshots_share_one_checkpoint() {
    #[derive(StatefulOperator, Default)]
    #[operator(name = "counts", key = u64)]
    struct Counts {
        n: ValueState<u64>,
    }
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path().join("c"))).unwrap();
    let mut rocks = open(&dir.path().join("db"));
    let mut heap = Counts::default().bind(HeapBackend::new()).unwrap();
    round(&mut rocks, 0);
    for k in 0..100u64 {
        heap.key(&k).unwrap().n().set(&k).unwrap();
    }
    let first = checkpointer
        .checkpoint_now(&mut [&mut rocks, &mut heap])
        .unwrap();
    let kinds: Vec<SnapshotKind> = first.info.files.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![SnapshotKind::Native, SnapshotKind::Full]);
    heap.key(&1).unwrap().n().set(&1000).unwrap();
    let second = checkpointer
        .checkpoint_now(&mut [&mut rocks, &mut heap])
        .unwrap();
    let kinds: Vec<SnapshotKind> = second.info.files.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![SnapshotKind::Native, SnapshotKind::Incremental]);

    let mut back = Counts::default()
        .restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert_eq!(back.key(&1).unwrap().n().get_owned().unwrap(), Some(1000));
    let restored = restore_native(
        Native::default(),
        checkpointer.storage(),
        RestorePoint::Latest,
        KeyGroupRange::all(MAX),
        dir.path().join("restored"),
        RocksDbOptions::low_memory(),
    )
    .unwrap();
    assert!(image(&restored) == expected(KeyGroupRange::all(MAX), 1));

    // With `native(false)` RocksDB writes canonical snapshots, which restore anywhere.
    let mut canonical =
        Checkpointer::new(CheckpointConfig::new(dir.path().join("canonical")).native(false))
            .unwrap();
    let info = canonical.checkpoint_now(&mut [&mut rocks]).unwrap().info;
    assert_eq!(info.kind(), SnapshotKind::Full);
    let heap_copy = Native::default()
        .restore(
            HeapBackend::new(),
            canonical.storage(),
            RestorePoint::Latest,
        )
        .unwrap();
    assert!(image(&heap_copy) == image(&rocks));
}
