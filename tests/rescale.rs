//! Key groups and rescaling: a checkpoint taken by 2 instances restores into 3 instances and
//! into 1, each holding exactly what an unpartitioned run holds for its key groups.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::keygroup::{KeyGroupRange, key_group};
use statewright::prelude::*;
use statewright::snapshot::SnapshotOptions;
use statewright::{Error, StateKey};

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 64)]
pub struct Sessions {
    clicks: ValueState<u64>,
    pages: ListState<u32>,
    last_seen: MapState<u32, u64>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 32)]
pub struct SessionsFewerGroups {
    clicks: ValueState<u64>,
    pages: ListState<u32>,
    last_seen: MapState<u32, u64>,
}

const MAX: u16 = 64;

fn user(i: u64) -> String {
    format!("user-{}", i % 700)
}

fn instance_of(key: &str, parallelism: u16) -> usize {
    let kg = key_group(&key.to_owned().to_key_bytes(), MAX);
    KeyGroupRange::instance_of(kg, MAX, parallelism) as usize
}

fn apply(op: &mut Bound<Sessions, HeapBackend>, i: u64) {
    let mut st = op.key(user(i).as_str()).unwrap();
    st.clicks().update(|c| c.unwrap_or(0) + 1).unwrap();
    if i.is_multiple_of(3) {
        st.pages().add(&((i % 50) as u32)).unwrap();
    }
    st.last_seen().put(&((i % 11) as u32), &i).unwrap();
    if i.is_multiple_of(17) {
        st.last_seen().remove(&((i % 5) as u32)).unwrap();
    }
}

fn instances(parallelism: u16) -> Vec<Bound<Sessions, HeapBackend>> {
    (0..parallelism)
        .map(|i| {
            Sessions::default()
                .bind(HeapBackend::new())
                .unwrap()
                .with_key_groups(KeyGroupRange::for_instance(MAX, parallelism, i).unwrap())
                .unwrap()
        })
        .collect()
}

/// The canonical bytes of an instance's snapshot.
fn image(op: &Bound<Sessions, HeapBackend>) -> Vec<u8> {
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

/// What the unpartitioned run holds for the key groups of `range`, as a snapshot of them.
fn expected(all: &Bound<Sessions, HeapBackend>, range: KeyGroupRange, dir: &Path) -> Vec<u8> {
    let storage = CheckpointStorage::open(dir.join(format!("ref-{}", range.first()))).unwrap();
    all.checkpoint(&storage).unwrap();
    let mut part = Sessions::default()
        .bind(HeapBackend::new())
        .unwrap()
        .with_key_groups(range)
        .unwrap();
    part.restore_from(&storage, RestorePoint::Latest).unwrap();
    image(&part)
}

#[test]
fn a_checkpoint_of_two_instances_restores_into_three_and_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let mut all = Sessions::default().bind(HeapBackend::new()).unwrap();
    let mut two = instances(2);
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(&checkpoints)).unwrap();
    for round in 0..3u64 {
        for i in round * 5_000..(round + 1) * 5_000 {
            apply(&mut all, i);
            apply(&mut two[instance_of(&user(i), 2)], i);
        }
        // Both instances in one checkpoint: a full one, then incremental ones.
        let (a, b) = two.split_at_mut(1);
        checkpointer
            .checkpoint_now(&mut [&mut a[0], &mut b[0]])
            .unwrap();
    }
    let storage = checkpointer.storage().clone();
    let latest = storage.resolve(RestorePoint::Latest).unwrap();
    assert_eq!(latest.files.len(), 2);
    assert!(
        latest.files.iter().all(|f| f.base.len() == 2),
        "a chain of 3 each"
    );

    // Into 3: each instance reads the key groups it owns from both files' chains.
    let mut three = instances(3);
    let mut entries = 0;
    for op in &mut three {
        entries += op
            .restore_from(&storage, RestorePoint::Latest)
            .unwrap()
            .entries;
        assert!(image(op) == expected(&all, op.key_groups(), dir.path()));
    }
    assert!(entries > 700);
    // Into 1.
    let mut one = Sessions::default().bind(HeapBackend::new()).unwrap();
    one.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert!(image(&one) == image(&all));
    // And the restored instances go on working: a key reaches only its owner.
    for i in 0..700u64 {
        let owner = instance_of(&user(i), 3);
        for (n, op) in three.iter_mut().enumerate() {
            let r = op.key(user(i).as_str());
            assert_eq!(r.is_ok(), n == owner, "key {} on instance {n}", user(i));
        }
        let mut st = three[owner].key(user(i).as_str()).unwrap();
        let restored = st.clicks().get_owned().unwrap();
        let mut st = all.key(user(i).as_str()).unwrap();
        assert_eq!(restored, st.clicks().get_owned().unwrap());
    }
}

#[test]
fn a_checkpoint_missing_an_instance_is_refused_for_its_key_groups() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut two = instances(2);
    for i in 0..2_000u64 {
        apply(&mut two[instance_of(&user(i), 2)], i);
    }
    // Only instance 0 is in the checkpoint.
    let mut pending = storage.begin().unwrap();
    pending.add(&two[0]).unwrap();
    assert!(pending.add(&two[0]).is_err(), "the same key groups twice");
    pending.commit().unwrap();
    let mut one = Sessions::default().bind(HeapBackend::new()).unwrap();
    let err = one
        .restore_from(&storage, RestorePoint::Latest)
        .unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    assert!(
        err.to_string().contains("no snapshot of key group 32"),
        "{err}"
    );
    // The instance that was checkpointed restores.
    let mut first = instances(2).remove(0);
    first.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert!(image(&first) == image(&two[0]));
}

#[test]
fn restoring_with_another_max_parallelism_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut all = Sessions::default().bind(HeapBackend::new()).unwrap();
    for i in 0..100 {
        apply(&mut all, i);
    }
    all.checkpoint(&storage).unwrap();
    let err = SessionsFewerGroups::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Incompatible { .. }), "{message}");
    assert!(
        message.contains("max_parallelism 64, the operator declares 32"),
        "{message}"
    );
}

#[test]
fn instance_ranges_partition_the_key_groups() {
    for parallelism in [1u16, 2, 3, 7, 64] {
        let mut next = 0u16;
        for i in 0..parallelism {
            let r = KeyGroupRange::for_instance(MAX, parallelism, i).unwrap();
            assert_eq!(r.first(), next);
            next = r.last() + 1;
        }
        assert_eq!(next, MAX);
    }
    // More instances than key groups is refused.
    assert!(KeyGroupRange::for_instance(MAX, 65, 0).is_none());
}

/// A store that counts the bytes read from snapshots.
#[derive(Debug)]
struct Counting {
    inner: statewright::store::LocalStore,
    read: std::sync::atomic::AtomicU64,
}

impl statewright::store::CheckpointStore for Counting {
    fn locate(&self, name: &str) -> std::path::PathBuf {
        self.inner.locate(name)
    }
    fn create(&self, name: &str) -> statewright::Result<Box<dyn statewright::store::ObjectWriter>> {
        self.inner.create(name)
    }
    fn put_file(&self, name: &str, from: &Path) -> statewright::Result<u64> {
        self.inner.put_file(name, from)
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> statewright::Result<bool> {
        self.inner.put_if_absent(name, bytes)
    }
    fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> statewright::Result<Vec<u8>> {
        let bytes = self.inner.get_range(name, range)?;
        if name.starts_with("chk-") {
            self.read
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(bytes)
    }
    fn head(&self, name: &str) -> statewright::Result<Option<u64>> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> statewright::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> statewright::Result<()> {
        self.inner.delete(name)
    }
    fn delete_prefix(&self, prefix: &str) -> statewright::Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn local_path(&self, name: &str) -> Option<std::path::PathBuf> {
        self.inner.local_path(name)
    }
}

/// A restore at another parallelism reads the blocks of its own key groups (and the files'
/// headers and indexes), not every file whole: on object storage, its share of the bytes.
#[test]
fn a_rescaled_restore_reads_its_share_of_the_checkpoint() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let counting = std::sync::Arc::new(Counting {
        inner: statewright::store::LocalStore::open(dir.path()).unwrap(),
        read: 0.into(),
    });
    let storage = CheckpointStorage::from_store(counting.clone());
    let mut two = instances(2);
    for i in 0..30_000u64 {
        apply(&mut two[instance_of(&user(i), 2)], i);
    }
    let mut pending = storage.begin().unwrap();
    for op in &two {
        pending.add(op).unwrap();
    }
    let info = pending.commit().unwrap();
    let total = info.bytes();
    let mut three = instances(3);
    let mut reads = Vec::new();
    for op in &mut three {
        counting.read.store(0, Ordering::Relaxed);
        op.restore_from(&storage, RestorePoint::Latest).unwrap();
        reads.push(counting.read.load(Ordering::Relaxed));
    }
    for (n, read) in reads.iter().enumerate() {
        assert!(
            *read as f64 <= 1.2 * total as f64 / 3.0,
            "instance {n} read {read} of {total} bytes"
        );
    }
    // Restored into one instance, every file is read whole and checked whole first.
    counting.read.store(0, Ordering::Relaxed);
    let mut one = Sessions::default().bind(HeapBackend::new()).unwrap();
    one.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert!(counting.read.load(Ordering::Relaxed) >= 2 * total);
}
